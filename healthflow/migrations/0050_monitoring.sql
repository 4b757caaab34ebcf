-- Monitoring results: aggregates only (per column, per group, per run), never a patient row.

-- One row per `healthflow monitor run`: the window, the model version audited, and where the reports are.
CREATE TABLE IF NOT EXISTS monitoring.reports (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    window_start timestamptz NOT NULL,
    window_end timestamptz NOT NULL,
    model_name text NOT NULL,
    model_version text NOT NULL,
    model_run_id text NOT NULL DEFAULT '',
    mlflow_run_id text,
    reference_rows integer NOT NULL,
    current_rows integer NOT NULL,
    labelled_rows integer NOT NULL DEFAULT 0,
    labels_known boolean NOT NULL,
    drift_share double precision NOT NULL,
    drifted_columns text[] NOT NULL DEFAULT '{}',
    quality_failures integer NOT NULL DEFAULT 0,
    report_dir text NOT NULL,
    html_path text NOT NULL,
    json_path text NOT NULL,
    classification_html_path text,
    summary jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS reports_model_idx ON monitoring.reports (model_name, created_at DESC);

-- Evidently's verdict per feature column and run.
CREATE TABLE IF NOT EXISTS monitoring.drift_columns (
    report_id bigint NOT NULL REFERENCES monitoring.reports (id) ON DELETE CASCADE,
    column_name text NOT NULL,
    column_type text NOT NULL,
    method text NOT NULL,
    score double precision NOT NULL,
    threshold double precision NOT NULL,
    drifted boolean NOT NULL,
    PRIMARY KEY (report_id, column_name)
);

-- Fairness audit per audit attribute and group; metrics is empty when the group is too small.
CREATE TABLE IF NOT EXISTS monitoring.fairness (
    report_id bigint NOT NULL REFERENCES monitoring.reports (id) ON DELETE CASCADE,
    attribute text NOT NULL,
    group_value text NOT NULL,
    row_count integer NOT NULL,
    too_small boolean NOT NULL,
    metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (report_id, attribute, group_value)
);

-- Between-group difference (max - min) and ratio (min / max) per attribute and metric; NULL when undefined.
CREATE TABLE IF NOT EXISTS monitoring.fairness_gaps (
    report_id bigint NOT NULL REFERENCES monitoring.reports (id) ON DELETE CASCADE,
    attribute text NOT NULL,
    metric text NOT NULL,
    difference double precision,
    ratio double precision,
    groups_compared integer NOT NULL,
    PRIMARY KEY (report_id, attribute, metric)
);

-- Limits crossed by a run; each row is also published as an `alert` event on audit.alerts.
CREATE TABLE IF NOT EXISTS monitoring.alerts (
    id bigserial PRIMARY KEY,
    report_id bigint NOT NULL REFERENCES monitoring.reports (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    model_name text NOT NULL,
    model_version text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('drift', 'fairness', 'data_quality')),
    subject text NOT NULL,
    value double precision NOT NULL,
    limit_value double precision NOT NULL,
    message text NOT NULL,
    published boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS alerts_created_idx ON monitoring.alerts (created_at DESC);
