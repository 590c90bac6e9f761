"""Everything the morning report shows, built once: Slack message, CSV, chart PNG, HTML page.

Pure: frames in, bytes out (the shared store, adperf.files, writes them). The content
hash covers everything a reader sees, so a re-run on the same numbers is recognisably the same
report and a re-run on restated numbers is recognisably a different one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from adperf.sinks.chart import build_chart_data, render_chart
from adperf.sinks.html import build_html_report
from adperf.sinks.slack import build_campaign_csv, build_slack_message
from adperf.sinks.summary import (
    build_total_rows,
    build_totals,
    comparison_days,
    money,
    num,
    restricted_note,
)

REPORT_FOLDER = "reports"
META_FILE = "_meta.json"
MESSAGE_FILE = "message.json"
CHART_FILE = "chart.png"
CSV_FILE = "campaigns.csv"
HTML_FILE = "report.html"


@dataclass(frozen=True)
class RenderedReport:
    """The day's report in every form, and the hash of its content."""

    day: str
    message: dict[str, Any]
    csv: bytes
    png: bytes
    html: str
    content_hash: str

    def files(self) -> dict[str, bytes]:
        """The report folder's files by name."""
        return {
            MESSAGE_FILE: json.dumps(self.message, ensure_ascii=False, indent=1).encode("utf-8"),
            CHART_FILE: self.png,
            CSV_FILE: self.csv,
            HTML_FILE: self.html.encode("utf-8"),
        }


def render_report(
    *,
    day: str,
    currency: str,
    campaigns: pd.DataFrame,
    actions: pd.DataFrame,
    cohorts: pd.DataFrame,
    reconciliation: dict[str, float],
    notes: list[str],
    history_campaigns: pd.DataFrame,
    history_cohorts: pd.DataFrame,
    history_spend: pd.DataFrame | None = None,
    target_roas: float | None = None,
    accounts_line: str | None = None,
    watch: pd.DataFrame | None = None,
    follow_ups: list[str] | None = None,
) -> RenderedReport:
    """The report of `day` from its campaign/action/cohort rows and the earlier days' rows.

    `cohorts` is the day's cohort triangle; `history_*` are campaign_daily / cohort_roas rows of
    the days before and ad_spend_daily rows of the chart's window (as loaded in the warehouse;
    days not loaded are simply missing). Amounts are in the report currency. `watch`: the
    day's watch findings (adperf.transform.watch; None: the section is left out).
    """
    d1, d7 = comparison_days(day)
    # The day's triangle holds the earlier days' cohorts too (D0 of yesterday, D7 of the week
    # before's), and supersedes the warehouse's cells it covers.
    known_cohorts = pd.concat([_frame(history_cohorts), _frame(cohorts)], ignore_index=True)
    before = {
        d: build_totals(
            history_campaigns[history_campaigns["date"].astype(str) == d], known_cohorts, d
        )
        if (history_campaigns["date"].astype(str) == d).any()
        else None
        for d in (d1, d7)
    }
    csv_name = f"adperf-{day}-campaigns.csv"
    message = build_slack_message(
        day=day,
        currency=currency,
        campaigns=campaigns,
        actions=actions,
        reconciliation=reconciliation,
        notes=notes,
        cohorts=cohorts,
        day_before=before[d1],
        week_before=before[d7],
        attachment=csv_name,
        accounts_line=accounts_line,
        watch=watch,
        follow_ups=follow_ups,
    )
    csv = build_campaign_csv(campaigns, actions)
    chart = build_chart_data(
        day,
        pd.concat([_frame(history_campaigns), _frame(campaigns)], ignore_index=True),
        # The day's triangle alone draws every cohort curve: no warehouse history needed.
        cohorts,
        spend=history_spend,
    )
    png = render_chart(chart, currency, target_roas)
    day_totals = build_totals(campaigns, cohorts, day)
    totals = build_total_rows(day_totals, before[d1], before[d7], currency)
    restricted = restricted_note(day_totals, reconciliation, currency)
    html = build_html_report(
        day=day,
        currency=currency,
        totals=totals,
        comparison=(d1, d7),
        campaigns=campaigns,
        actions=actions,
        notes=[
            *notes,
            _unattributed_note(reconciliation, currency),
            *([restricted] if restricted else []),
        ],
        png=png,
        accounts_line=accounts_line,
        watch=watch,
        follow_ups=follow_ups,
    )
    digest = hashlib.sha256()
    # The PNG's bytes depend on the matplotlib version; its data is what the reader sees.
    for part in (json.dumps(message, sort_keys=True).encode("utf-8"), csv, chart.fingerprint()):
        digest.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        digest.update(b"\0")
    return RenderedReport(day, message, csv, png, html, digest.hexdigest())


def build_quality_notes(
    *,
    currency: str,
    payments_meta: dict[str, Any],
    events_meta: dict[str, Any],
    restatements: pd.DataFrame | None,
    ltv_model: pd.DataFrame | None,
) -> list[str]:
    """Data-quality notes of a day: restated spend, quarantined rows, the LTV model's state."""
    notes = []
    if restatements is not None and len(restatements):
        day_col = next(
            (c for c in ("restated_date", "spend_date", "date") if c in restatements.columns), None
        )
        ordered = restatements.sort_values(day_col) if day_col else restatements
        for row in ordered.to_dict("records"):
            delta = num(row.get("delta"))
            if delta is None or abs(delta) < 0.005:
                continue
            sign = "+" if delta > 0 else "−"
            when = f" for {row[day_col]}" if day_col else ""
            notes.append(
                f"{str(row.get('platform', '?')).replace('_', ' ').title()} spend{when} restated "
                f"{sign}{money(abs(delta), currency)} ({money(row.get('previous'), currency)} → "
                f"{money(row.get('latest'), currency)})"
            )
    for meta, label in ((payments_meta, "payment rows"), (events_meta, "log lines")):
        bad = int(meta.get("quarantined", 0) or 0) + int(meta.get("bad", 0) or 0)
        if bad:
            notes.append(f"{bad:,} {label} quarantined (not counted)")
    if ltv_model is not None and len(ltv_model):
        notes.extend(_ltv_notes({str(k): v for k, v in ltv_model.iloc[0].items()}))
    return notes


def report_path(root: Path, day: str) -> Path:
    """The folder of a day's rendered report."""
    return Path(root) / REPORT_FOLDER / f"date={day}"


def _ltv_notes(model: dict[str, Any]) -> list[str]:
    notes = []
    fallback = any(bool(model.get(c)) for c in ("fallback", "is_fallback", "fallback_used"))
    fitted = next(
        (model.get(c) for c in ("fitted_on", "model_date", "fit_date") if model.get(c)), None
    )
    if fallback:
        notes.append(
            "pROAS uses an older LTV model"
            + (f" (fitted on {fitted})" if fitted else "")
            + ": today's fit did not converge"
        )
    elif not bool(model.get("converged", True)):
        notes.append(
            f"The LTV model did not converge ({int(model.get('n_customers') or 0):,} customers): "
            "pROAS is n/a and actions rely on ROAS"
        )
    else:
        span, horizon = _history_and_horizon(model.get("params"))
        if span and horizon and span < horizon:
            notes.append(
                f"pLTV extrapolates {span} days of payments to {horizon} days: on a history "
                "this short the model's tail tends to read high (docs/model.md §2)"
            )
    return notes


def _history_and_horizon(params: Any) -> tuple[int | None, int | None]:
    """(days of payments the LTV fit saw, the horizon valued) from an `ltv_model` row's params
    JSON; None where the row does not say (rows written before they were recorded)."""
    try:
        parsed = json.loads(str(params)) if params else {}
    except ValueError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    values = (parsed.get("history_span_days"), parsed.get("horizon_days"))
    span, horizon = (int(v) if isinstance(v, (int, float)) else None for v in values)
    return span, horizon


def _unattributed_note(reconciliation: dict[str, float], currency: str) -> str:
    total = num(reconciliation.get("total_payments")) or 0.0
    unattributed = num(reconciliation.get("unattributed")) or 0.0
    share = f"{unattributed / total:.1%}" if total else "n/a"
    return (
        f"Unattributed revenue: {share} of payments ({money(unattributed, currency)} of "
        f"{money(total, currency)})"
    )


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    # An empty frame without columns would drop the others' dtypes in concat.
    return df if len(df.columns) else pd.DataFrame(columns=["date"])
