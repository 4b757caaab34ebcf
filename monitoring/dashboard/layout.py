"""The dashboard's page and tab contents, built from ``DashboardData`` in one language."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from dash import dcc, html

from monitoring.dashboard.data import DashboardData
from monitoring.dashboard.i18n import DEFAULT_LANGUAGE, LANGUAGES, translate

TABS = ("overview", "fairness", "drift", "lineage")
GAP_METRICS = ("selection_rate", "tpr", "fpr", "fnr")
LANGUAGE_NAMES = {"en": "English", "fr": "Français"}


@dataclass(frozen=True)
class Limits:
    """The limits drawn on the charts (shares, 0..1) and the minimum group size."""

    drift_share: float
    fairness_gap: float
    min_group_size: int


def page() -> html.Div:
    """Return the page skeleton; the callbacks fill in the labels and the tab content."""
    return html.Div(
        [
            html.Div(
                [
                    html.H1(id="title", children=translate(DEFAULT_LANGUAGE, "title")),
                    html.Label(
                        id="language-label", htmlFor="language", children=translate(DEFAULT_LANGUAGE, "language")
                    ),
                    dcc.RadioItems(
                        id="language",
                        options=[{"label": LANGUAGE_NAMES[code], "value": code} for code in LANGUAGES],
                        value=DEFAULT_LANGUAGE,
                        inline=True,
                    ),
                ],
                className="header",
            ),
            dcc.Tabs(
                id="tabs",
                value="overview",
                children=[
                    dcc.Tab(id=f"tab-{name}", value=name, label=translate(DEFAULT_LANGUAGE, f"tab_{name}"))
                    for name in TABS
                ],
            ),
            dcc.Loading(html.Div(id="tab-content")),
        ],
        style={"fontFamily": "sans-serif", "margin": "1em"},
    )


def table(headers: list[str], rows: list[list[Any]], *, table_id: str) -> html.Table:
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(item) for item in headers])),
            html.Tbody([html.Tr([html.Td(cell) for cell in row]) for row in rows]),
        ],
        id=table_id,
        style={"borderCollapse": "collapse"},
    )


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def overview_tab(data: DashboardData, language: str) -> html.Div:
    """Volume per day, score quantiles per day, the champion version and the latest report."""
    t = lambda key, **values: translate(language, key, **values)  # noqa: E731
    if data.champion:
        champion_text = f"{data.champion['name']} v{data.champion['version']}"
    else:
        champion_text = t("no_champion")
        if data.versions:
            latest = f"{data.versions[0]['model_name']} v{data.versions[0]['model_version']}"
            champion_text += f" ({t('latest_scored', version=latest)})"
    children: list[Any] = [
        html.H2(t("tab_overview")),
        html.P([html.B(f"{t('champion')}: "), html.Span(champion_text, id="champion")]),
    ]

    if data.daily:
        days = [row["day"] for row in data.daily]
        volume = go.Figure(go.Bar(x=days, y=[row["predictions"] for row in data.daily], name=t("predictions")))
        volume.update_layout(
            title=t("predictions_per_day"),
            xaxis_title=t("day"),
            yaxis_title=t("predictions"),
            xaxis_tickformat="%Y-%m-%d",
        )
        quantiles = [row["quantiles"] for row in data.daily]
        scores = go.Figure()
        scores.add_trace(
            go.Scatter(x=days, y=[q[4] for q in quantiles], mode="lines", line={"width": 0}, showlegend=False)
        )
        scores.add_trace(
            go.Scatter(
                x=days, y=[q[0] for q in quantiles], mode="lines", line={"width": 0}, fill="tonexty", name="10–90%"
            )
        )
        scores.add_trace(go.Scatter(x=days, y=[q[2] for q in quantiles], mode="lines+markers", name=t("median")))
        scores.add_trace(
            go.Scatter(
                x=days, y=[row["mean_score"] for row in data.daily], mode="lines", name=t("mean"), line={"dash": "dot"}
            )
        )
        scores.update_layout(
            title=t("score_distribution"), xaxis_title=t("day"), yaxis_title=t("score"), yaxis_range=[0, 1]
        )
        children += [dcc.Graph(id="volume-graph", figure=volume), dcc.Graph(id="score-graph", figure=scores)]
    else:
        children.append(html.P(t("no_predictions")))

    children.append(html.H3(t("latest_report")))
    if data.report is None:
        children.append(html.P(t("no_report")))
    else:
        report = data.report
        children.append(
            table(
                [t("window"), t("model"), t("rows"), t("labelled")],
                [
                    [
                        f"{report['window_start']:%Y-%m-%d %H:%M} – {report['window_end']:%Y-%m-%d %H:%M} UTC",
                        f"{report['model_name']} v{report['model_version']}",
                        report["current_rows"],
                        report["labelled_rows"],
                    ]
                ],
                table_id="report-table",
            )
        )
    children.append(html.H3(t("alerts")))
    if data.alerts:
        children.append(
            table(
                [t("created"), t("kind"), t("subject"), t("value"), t("limit")],
                [
                    [
                        f"{row['created_at']:%Y-%m-%d %H:%M}",
                        t(row["kind"]),
                        row["subject"],
                        _fmt(row["value"]),
                        _fmt(row["limit_value"]),
                    ]
                    for row in data.alerts
                ],
                table_id="alerts-table",
            )
        )
    else:
        children.append(html.P(t("no_alerts")))
    return html.Div(children, id="overview-content")


def fairness_tab(data: DashboardData, language: str, limits: Limits) -> html.Div:
    """Per attribute: grouped bars of the rates by group, the differences against the limit, and their history."""
    t = lambda key, **values: translate(language, key, **values)  # noqa: E731
    children: list[Any] = [html.H2(t("tab_fairness"))]
    if data.report is None:
        return html.Div([*children, html.P(t("no_report"))], id="fairness-content")
    if not data.report["labels_known"]:
        children.append(html.P(t("labels_pending"), id="labels-pending"))

    attributes = list(dict.fromkeys(row["attribute"] for row in data.fairness_groups))
    for attribute in attributes:
        rows = [row for row in data.fairness_groups if row["attribute"] == attribute]
        computed = [row for row in rows if not row["too_small"]]
        small = [row["group_value"] for row in rows if row["too_small"]]
        metrics = [metric for metric in GAP_METRICS if any(row["metrics"].get(metric) is not None for row in computed)]

        bars = go.Figure()
        for metric in metrics:
            bars.add_trace(
                go.Bar(
                    x=[row["group_value"] for row in computed],
                    y=[row["metrics"].get(metric) for row in computed],
                    name=t(metric),
                )
            )
        bars.update_layout(
            title=t("fairness_by_group", metric=", ".join(t(metric) for metric in metrics), attribute=t(attribute)),
            barmode="group",
            yaxis_range=[0, 1],
            xaxis_title=t("group"),
        )
        differences = differences_of(computed, metrics)
        gaps = go.Figure(
            go.Bar(x=[t(metric) for metric in differences], y=list(differences.values()), name=t("difference"))
        )
        gaps.add_hline(
            y=limits.fairness_gap,
            line_dash="dash",
            line_color="red",
            annotation_text=f"{t('limit')} {limits.fairness_gap:.2f}",
        )
        gaps.update_layout(
            title=f"{t('difference')} ({t(attribute)})",
            yaxis_range=[0, max([limits.fairness_gap * 1.5, *differences.values()])],
        )

        children += [
            html.H3(t(attribute).capitalize()),
            dcc.Graph(id=f"fairness-{attribute}", figure=bars),
            dcc.Graph(id=f"gaps-{attribute}", figure=gaps),
        ]
        if small:
            children.append(
                html.P(t("too_small", size=limits.min_group_size, groups=", ".join(small)), className="too-small")
            )

    history = go.Figure()
    for key in sorted({(row["attribute"], row["metric"]) for row in data.gap_history if row["metric"] in GAP_METRICS}):
        points = [row for row in data.gap_history if (row["attribute"], row["metric"]) == key]
        history.add_trace(
            go.Scatter(
                x=[row["created_at"] for row in points],
                y=[row["difference"] for row in points],
                mode="lines+markers",
                name=f"{t(key[0])}: {t(key[1])}",
            )
        )
    history.add_hline(y=limits.fairness_gap, line_dash="dash", line_color="red", annotation_text=t("limit"))
    history.update_layout(title=t("gap_history"), yaxis_title=t("difference"))
    children.append(dcc.Graph(id="gap-history", figure=history))
    return html.Div(children, id="fairness-content")


def differences_of(computed: list[dict[str, Any]], metrics: list[str]) -> dict[str, float]:
    """Return max - min of each metric over the computed groups (the same rule as the audit's gaps)."""
    differences = {}
    for metric in metrics:
        values = [row["metrics"][metric] for row in computed if row["metrics"].get(metric) is not None]
        if len(values) >= 2:
            differences[metric] = max(values) - min(values)
    return differences


def drift_tab(data: DashboardData, language: str, limits: Limits) -> html.Div:
    """Per-feature drift scores with their thresholds, the drifted share against its limit, and the report link."""
    t = lambda key, **values: translate(language, key, **values)  # noqa: E731
    children: list[Any] = [html.H2(t("tab_drift"))]
    if data.report is None:
        return html.Div([*children, html.P(t("no_report"))], id="drift-content")

    report = data.report
    children.append(html.P(t("drift_share", share=report["drift_share"], limit=limits.drift_share), id="drift-share"))
    columns = data.drift_columns
    figure = go.Figure()
    for drifted in (True, False):
        part = [row for row in columns if row["drifted"] is drifted]
        figure.add_trace(
            go.Bar(
                x=[row["column_name"] for row in part],
                y=[row["score"] for row in part],
                name=t("drifted") if drifted else t("not_drifted"),
                marker_color="crimson" if drifted else "steelblue",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=[row["column_name"] for row in columns],
            y=[row["threshold"] for row in columns],
            mode="markers",
            marker_symbol="line-ew-open",
            marker_size=18,
            name=t("threshold"),
        )
    )
    figure.update_layout(title=t("drift_scores"), xaxis_title=t("feature"), yaxis_title=t("drift_score"))
    children.append(dcc.Graph(id="drift-graph", figure=figure))
    children.append(
        table(
            [t("feature"), t("method"), t("drift_score"), t("threshold"), t("drifted")],
            [
                [
                    row["column_name"],
                    row["method"],
                    _fmt(row["score"], 4),
                    _fmt(row["threshold"]),
                    "✔" if row["drifted"] else "",
                ]
                for row in columns
            ],
            table_id="drift-table",
        )
    )
    children.append(
        html.P(html.A(t("full_report"), href=f"/reports/{report['id']}/drift.html", target="_blank", id="report-link"))
    )
    if report["labels_known"]:
        children.append(
            html.P(
                html.A(t("classification_report"), href=f"/reports/{report['id']}/classification.html", target="_blank")
            )
        )
    return html.Div(children, id="drift-content")


def lineage_tab(data: DashboardData, language: str, mlflow_ui: str) -> html.Div:
    """Registered versions with their run and data fingerprint, the versions seen in the log, and MLflow links."""
    t = lambda key, **values: translate(language, key, **values)  # noqa: E731
    children: list[Any] = [
        html.H2(t("tab_lineage")),
        html.P(html.A(t("open_mlflow"), href=mlflow_ui, target="_blank", id="mlflow-link")),
    ]
    children.append(html.H3(t("model_versions")))
    if data.registry_error:
        children.append(html.P(t("registry_unavailable", error=data.registry_error)))
    children.append(
        table(
            [t("model"), t("version"), t("aliases"), t("run"), t("fingerprint")],
            [
                [
                    html.A(
                        row["name"],
                        href=f"{mlflow_ui}/#/models/{row['name']}/versions/{row['version']}",
                        target="_blank",
                    ),
                    row["version"],
                    ", ".join(row["aliases"]),
                    row["run_id"],
                    row["fingerprint"][:16],
                ]
                for row in data.registry_versions
            ],
            table_id="registry-table",
        )
    )
    children.append(html.H3(t("served_versions")))
    children.append(
        table(
            [t("model"), t("version"), t("run"), t("predictions")],
            [[row["model_name"], row["model_version"], row["run_id"], row["predictions"]] for row in data.versions],
            table_id="versions-table",
        )
    )
    return html.Div(children, id="lineage-content")
