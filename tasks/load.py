"""Load tasks: the warehouse day, the rendered report, Slack, the dashboard, and DailyReport."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import luigi
import pandas as pd

from adperf import warehouse
from adperf.files import report_folder, slack_marker
from adperf.sinks import inputs
from tasks import config
from tasks import resources as endpoints
from tasks.base import (
    _as_money,
    _first_row,
    _iso,
)
from tasks.extract import (
    _account_days,
)
from tasks.targets import LakePartition, SharedFile, SharedFolder, WarehouseDay
from tasks.transform import (
    ActionOutcomes,
    Attribution,
    CampaignReport,
    CohortRoas,
    CohortRoasSegments,
    Ltv,
    LtvModel,
    Restatements,
    Spend,
    SpendLatest,
    Watch,
)


class LoadReport(luigi.Task):
    """The report tables of one day, replaced in the warehouse in one transaction."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "spend": Spend(date=self.date),
            "spend_latest": SpendLatest(date=self.date),
            # Written before the report is rendered: its notes say which days were restated.
            "restatements": Restatements(date=self.date),
            "report": CampaignReport(date=self.date),
            "cohorts": CohortRoas(date=self.date),
            "segments": CohortRoasSegments(date=self.date),
            "ltv": Ltv(date=self.date),
            "ltv_model": LtvModel(date=self.date),
            "attribution": Attribution(date=self.date),
            "watch": Watch(date=self.date),  # its source_discrepancy table
            "outcomes": ActionOutcomes(date=self.date),
        }

    def output(self) -> WarehouseDay:
        return WarehouseDay(config.adperf().warehouse_url, _iso(self.date))

    def run(self) -> None:
        inp = self.input()
        cohorts = inp["cohorts"].read().rename(columns={})
        # ad_spend_daily: this day's pulls replace every day they cover (restated days too), in
        # the same transaction, unless a later pull already loaded a day (README, Restatement).
        from adperf.transform.restatement import rows_in_windows

        spend = inp["spend_latest"]
        windows = {p: (w[0], w[1]) for p, w in spend.meta()["windows"].items()}
        frames = {
            "campaign_daily": inp["report"]["campaign_report"].read(),
            "cohort_roas": cohorts,
            "cohort_roas_segments": inp["segments"].read(),
            "ltv_model": _ltv_model_with_backtest(inp["ltv_model"]["ltv_model"], inp["ltv"]),
            "revenue_reconciliation": inp["attribution"]["reconciliation"].read(),
            "actions": inp["report"]["actions"].read(),
            "source_discrepancy": inp["watch"]["source_discrepancy"].read(),
            "action_outcomes": inp["outcomes"].read(),
        }
        pulled = rows_in_windows(spend.read(), windows)
        url = config.adperf().warehouse_url
        warehouse.load_day_at(url, _iso(self.date), frames, spend_pull=(pulled, windows))


def _ltv_model_with_backtest(model: LakePartition, ltv: dict[str, LakePartition]) -> pd.DataFrame:
    """The day's ltv_model row with the backtest Ltv made of it (the report's ltv_model)."""
    from adperf.transform.ltv import with_backtest

    row = with_backtest(_first_row(model.read()), _first_row(ltv["ltv_backtest"].read()))
    return pd.DataFrame([row])


class RenderReport(luigi.Task):
    """The day's report rendered once: Slack message, chart PNG, CSV and HTML page in the lake.

    Earlier days (the d/d and w/w changes, the 30-day chart) come from the warehouse, as loaded:
    reading them is not a dependency (that would pull 30 days of graph into every report), except
    the day before and the week before under `[adperf] load_comparison_days` (the demo's).
    """

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, Any]:
        required: dict[str, Any] = {
            # The load first: the warehouse then holds the day's (and restated days') spend.
            "load": LoadReport(date=self.date),
            "report": CampaignReport(date=self.date),
            "attribution": Attribution(date=self.date),
            "cohorts": CohortRoas(date=self.date),
            "ltv": Ltv(date=self.date),
            "watch": Watch(date=self.date),
            "outcomes": ActionOutcomes(date=self.date),
        }
        if config.adperf().load_comparison_days:
            from adperf.sinks.summary import COMPARISON_LAGS

            # A first run's report then compares with both days too; a later day's run finds
            # them loaded already (their tables, not their Slack report or dashboard).
            required["comparison"] = [
                LoadReport(date=self.date - dt.timedelta(days=n)) for n in COMPARISON_LAGS
            ]
        return required

    def output(self) -> SharedFolder:
        return SharedFolder(config.shared_files(), report_folder(_iso(self.date)))

    def complete(self) -> bool:
        # Complete for the inputs it was rendered from only: a day re-run on restated numbers
        # (its campaign report rewritten) is rendered again, and SlackReport then updates.
        meta = self.output().meta()
        return meta is not None and meta.get("inputs") == _report_inputs(self.date)

    def run(self) -> None:
        from adperf.sinks.render import render_report

        day, inp, history = _iso(self.date), self.input(), _report_history(self.date)
        report = render_report(
            day=day,
            currency=config.adperf().report_currency,
            campaigns=_as_money(inp["report"]["campaign_report"].read()),
            actions=_as_money(inp["report"]["actions"].read()),
            cohorts=_as_money(inp["cohorts"].read()),
            reconciliation=_first_row(_as_money(inp["attribution"]["reconciliation"].read())),
            notes=_quality_notes(self.date),
            history_campaigns=history["campaign_daily"],
            history_cohorts=history["cohort_roas"],
            history_spend=history["ad_spend_daily"],
            target_roas=config.rules().target_roas,
            accounts_line=_accounts_line(self.date),
            watch=inp["watch"]["watch"].read(),
            follow_ups=[str(line) for line in inp["outcomes"].read()["line"]],
        )
        meta: dict[str, Any] = {"date": day, "content_hash": report.content_hash}
        meta["inputs"] = _report_inputs(self.date)
        config.shared_files().publish_folder(report_folder(day), report.files(), meta)


class SlackReport(luigi.Task):
    """The morning Slack report of one day: posted once (token) or written to the outbox.

    The marker `<data_root>/slack_posts/<day>.json` holds the post's channel and ts and the
    content hash it shows. Complete when the marker matches the current rendering: after a
    re-render with other numbers the task runs again and `chat.update`s the same message.
    Before posting, the marker is *pending* (no ts): a run that finds it looks the post up in
    the channel by its metadata key instead of posting again (see `publish_report`).
    """

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "load": LoadReport(date=self.date),
            "render": RenderReport(date=self.date),
            # Posted after the page exists: the message links to it.
            "dashboard": Dashboard(date=self.date),
        }

    def output(self) -> SharedFile:
        return SharedFile(config.shared_files(), slack_marker(_iso(self.date)))

    def complete(self) -> bool:
        marker = self.output().read_json()
        if not marker or not marker.get("complete"):
            return False
        if marker.get("delivery") != ("slack" if config.secrets().slack_token else "outbox"):
            return False
        # luigi looks no further than a complete task: a stale rendering makes this stale too.
        render = RenderReport(date=self.date)
        meta = render.output().meta()
        fresh = meta is not None and meta["content_hash"] == marker.get("content_hash")
        return fresh and render.complete()

    def run(self) -> None:
        from adperf.sinks.render import CHART_FILE, CSV_FILE, MESSAGE_FILE
        from adperf.sinks.slack import publish_report, with_dashboard_link, write_outbox

        day, marker = _iso(self.date), self.output()
        folder = RenderReport(date=self.date).output().version()
        content_hash = str(folder.meta["content_hash"])
        message = json.loads(folder.read(MESSAGE_FILE).decode("utf-8"))
        message = with_dashboard_link(message, _dashboard_link(self.date))
        files = {
            f"adperf-{day}.png": folder.read(CHART_FILE),
            f"adperf-{day}-campaigns.csv": folder.read(CSV_FILE),
        }
        token = config.secrets().slack_token
        if not token:
            paths = write_outbox(message, Path(config.slack().outbox), day, files)
            state = {"date": day, "delivery": "outbox", "content_hash": content_hash}
            marker.write_json({**state, "complete": True, "files": [str(p) for p in paths]})
            return
        publish_report(
            message,
            [(name, content, name) for name, content in files.items()],
            token=token,
            channel=config.slack().channel,
            base_url=endpoints.slack_base_url(self.date),
            day=day,
            content_hash=content_hash,
            previous=marker.read_json(),
            save=marker.write_json,
            # A post Slack refused leaves no marker; a pending one stays until it is looked up.
            forget=marker.delete,
        )


class Dashboard(luigi.Task):
    """The day's interactive dashboard page (`dashboard.html`), next to the report page.

    Trends come from the warehouse's history (as loaded, up to a year back) and the day's lake
    partitions; like the report, reading that history is not a dependency.
    """

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            # The report folder first: a re-render replaces the folder, dashboard included.
            "render": RenderReport(date=self.date),
            "segments": CohortRoasSegments(date=self.date),
            "report": CampaignReport(date=self.date),
            "attribution": Attribution(date=self.date),
        }

    def output(self) -> SharedFolder:
        from adperf.sinks.dashboard import DASHBOARD_FILE

        return SharedFolder(config.shared_files(), report_folder(_iso(self.date)), DASHBOARD_FILE)

    def complete(self) -> bool:
        # A stale rendering is about to replace the folder (and this page with it).
        return bool(self.output().exists()) and RenderReport(date=self.date).complete()

    def run(self) -> None:
        from adperf.sinks.dashboard import (
            DASHBOARD_FILE,
            build_dashboard_data,
            build_dashboard_html,
        )

        day, inp, history = _iso(self.date), self.input(), _dashboard_history(self.date)
        campaigns = _as_money(inp["report"]["campaign_report"].read())
        reconciliation = _first_row(_as_money(inp["attribution"]["reconciliation"].read()))
        segments = _as_money(inp["segments"].read())
        data = build_dashboard_data(
            day=day,
            currency=config.adperf().report_currency,
            segments=pd.concat([history["cohort_roas_segments"], segments], ignore_index=True),
            campaigns=pd.concat([history["campaign_daily"], campaigns], ignore_index=True),
            actions=_as_money(inp["report"]["actions"].read()),
            notes=_dashboard_notes(self.date, campaigns, reconciliation),
            target_roas=config.rules().target_roas,
        )
        page = build_dashboard_html(data).encode("utf-8")
        config.shared_files().add_to_folder(report_folder(day), DASHBOARD_FILE, page)


def _dashboard_history(day: dt.date) -> dict[str, pd.DataFrame]:
    """campaign_daily and cohort_roas_segments of the year before `day`, as loaded."""
    first, last = _iso(day - dt.timedelta(days=365)), _iso(day - dt.timedelta(days=1))
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        frames = {
            name: warehouse.read_days(engine, name, first, last)
            for name in ("campaign_daily", "cohort_roas_segments")
        }
    finally:
        engine.dispose()
    return frames


def _dashboard_notes(
    day: dt.date, campaigns: pd.DataFrame, reconciliation: dict[str, Any]
) -> list[str]:
    """The report's data-quality notes of the day (adperf.sinks.summary.report_notes)."""
    from adperf.sinks.summary import report_notes

    currency = config.adperf().report_currency
    return report_notes(_quality_notes(day), campaigns, reconciliation, currency)


class DailyReport(luigi.WrapperTask):
    """Everything for one report day: the warehouse tables and the Slack report."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> list[luigi.Task]:
        config.secrets()  # a production config without ADPERF_HMAC_KEY refuses to start
        return [LoadReport(date=self.date), SlackReport(date=self.date), Dashboard(date=self.date)]

    @classmethod
    def bulk_complete(cls, parameter_tuples: Any) -> list[Any]:
        """The complete days among `parameter_tuples`, for RangeDaily (cron's catch-up)."""
        # Without this, luigi's RangeDaily falls back to infer_bulk_complete_from_fs, which
        # reads `.path` of every output; a warehouse day has none, and the run fails with
        # SCHEDULING_FAILED. `cls` may be a functools.partial (RangeDaily's of_params).
        return [day for day in parameter_tuples if cls(date=day).complete()]


def _dashboard_link(day: dt.date) -> str:
    """The day's dashboard as people open it: [slack] dashboard_base_url, else its path under
    the data root."""
    from adperf.sinks.dashboard import dashboard_link

    return dashboard_link(config.slack().dashboard_base_url or None, _iso(day))


def _quality_notes(day: dt.date) -> list[str]:
    """Restated spend, quarantined rows and the LTV model's state, from the day's lake files."""
    return inputs.quality_notes(config.data_root(), _iso(day), config.adperf().report_currency)


def _accounts_line(day: dt.date) -> str | None:
    """Which ad accounts of the day's spend keep days of another zone (adperf.account_days)."""
    cfg = config.adperf()
    return inputs.accounts_line(config.data_root(), day, cfg.report_timezone, _account_days())


def _report_inputs(day: dt.date) -> str | None:
    """A hash of the day's report inputs as they are now; None while one is missing."""
    return inputs.inputs_hash(config.data_root(), _iso(day))


def _report_history(day: dt.date) -> dict[str, pd.DataFrame]:
    """campaign_daily and cohort_roas of the 30 days before `day`, ad_spend_daily of the 30
    days to `day`, as loaded in the warehouse."""
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        return inputs.history(engine, day)
    finally:
        engine.dispose()
