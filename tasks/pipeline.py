"""The Luigi graph of DESIGN.md: extract (one task per source x period), transform, load.

Tasks are thin: parameters, requires(), output(), and a run() that reads, calls one adperf
function, writes. A task instance is a partition: its output path follows from its parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import luigi
import pandas as pd

from adperf import lake, warehouse
from adperf.fx import FxTable, load_rates
from adperf.schema import AD_SPEND, EVENTS, INSTALLS, PAYMENTS, SPEND
from adperf.timeutil import days, month_days
from tasks import config
from tasks.resources import resources as endpoints
from tasks.targets import JsonFile, LakePartition, WarehouseDay

COHORT_WINDOW_DAYS = 30  # the oldest cohort age reported (D30)
PLATFORMS = ("facebook",)


def _iso(day: dt.date) -> str:
    return day.isoformat()


def _fx() -> FxTable:
    return load_rates(Path(endpoints().fx_path), config.adperf().report_currency)


def _window(day: dt.date, n_days: int) -> list[dt.date]:
    return days(day - dt.timedelta(days=n_days - 1), day)


def _history(day: dt.date, history_days: int) -> tuple[list[dt.date], list[dt.date]]:
    """Closed months (first days) and the current month's days covering the history window."""
    first = day - dt.timedelta(days=history_days - 1)
    month_start = day.replace(day=1)
    months: list[dt.date] = []
    m = first.replace(day=1)
    while m < month_start:
        months.append(m)
        m = month_days(m)[1] + dt.timedelta(days=1)
    return months, days(max(month_start, first), day)


def _read_all(targets: list[LakePartition]) -> pd.DataFrame:
    frames = [t.read() for t in targets]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class LakeTask(luigi.Task):
    """A task whose output is one lake partition per name in `outputs`."""

    outputs: tuple[str, ...] = ()

    def partition(self) -> tuple[str, str]:
        return "date", _iso(self.date)  # type: ignore[attr-defined]

    def output(self) -> Any:
        key, value = self.partition()
        root = config.data_root()
        targets = {name: LakePartition(root, name, key, value) for name in self.outputs}
        return targets if len(targets) > 1 else next(iter(targets.values()))


# ---------------------------------------------------------------- extract


class AdSpend(LakeTask):
    """Ad-level delivery of one platform and one day, in the ad account's currency."""

    platform = luigi.ChoiceParameter(choices=PLATFORMS, description="ad platform")
    date = luigi.DateParameter(description="report day")
    resources = {"api_facebook": 1}

    def output(self) -> LakePartition:
        return LakePartition(
            config.data_root(), f"ad_spend/platform={self.platform}", "date", _iso(self.date)
        )

    def run(self) -> None:
        from adperf.sources.facebook import fetch_facebook_spend

        res = endpoints(self.date)
        df = fetch_facebook_spend(
            graph_url=res.graph_url,
            api_version=config.facebook().api_version,
            access_token=config.secrets().facebook_token,
            account_ids=res.facebook_account_ids,
            day=self.date,
        )
        lake.write_partition(
            config.data_root(),
            AD_SPEND,
            "date",
            _iso(self.date),
            df,
            allow_empty=True,
            folder=f"ad_spend/platform={self.platform}",
        )


class Installs(LakeTask):
    """Installs (attributed and organic) of one day from the MMP, ids pseudonymized."""

    date = luigi.DateParameter(description="install day")
    outputs = ("installs",)
    resources = {"api_mmp": 1}

    def run(self) -> None:
        df = _fetch_installs(self.date, self.date)
        lake.write_partition(
            config.data_root(), INSTALLS, "date", _iso(self.date), df, allow_empty=True
        )


class InstallsMonth(LakeTask):
    """Installs of one closed month (one pull): the long install history costs 12 tasks, not 365."""

    month = luigi.MonthParameter(description="closed month")
    outputs = ("installs_monthly",)
    resources = {"api_mmp": 1}

    def partition(self) -> tuple[str, str]:
        return "month", self.month.strftime("%Y-%m")

    def run(self) -> None:
        first, last = month_days(self.month)
        df = _fetch_installs(first, last)
        lake.write_partition(
            config.data_root(),
            INSTALLS,
            *self.partition(),
            df,
            allow_empty=True,
            folder="installs_monthly",
        )


def _fetch_installs(first: dt.date, last: dt.date) -> pd.DataFrame:
    from adperf.sources.mmp import fetch_installs

    res = endpoints(last)
    return fetch_installs(
        base_url=res.mmp_base_url,
        app_ids=res.mmp_app_ids,
        api_token=config.secrets().mmp_token,
        day=first,
        last_day=last,
        timezone=config.adperf().report_timezone,
        hmac_key=config.secrets().hmac_key,
        media_source_map=res.media_source_map,
    )


class Payments(LakeTask):
    """Payments of one report day from the product DB, refunds negative, in report currency."""

    date = luigi.DateParameter(description="report day")
    outputs = ("payments",)

    def run(self) -> None:
        df, counts = _fetch_payments(self.date, self.date)
        lake.write_partition(
            config.data_root(), PAYMENTS, "date", _iso(self.date), df, meta=counts, allow_empty=True
        )


class PaymentsMonth(LakeTask):
    """Payments of one closed month, for the LTV history (one task per month)."""

    month = luigi.MonthParameter(description="closed month")
    outputs = ("payments_monthly",)

    def partition(self) -> tuple[str, str]:
        return "month", self.month.strftime("%Y-%m")

    def run(self) -> None:
        df, counts = _fetch_payments(*month_days(self.month))
        lake.write_partition(
            config.data_root(),
            PAYMENTS,
            *self.partition(),
            df,
            meta=counts,
            allow_empty=True,
            folder="payments_monthly",
        )


def _fetch_payments(first: dt.date, last: dt.date) -> tuple[pd.DataFrame, dict[str, int]]:
    from adperf.sources.payments import fetch_payments

    res = endpoints(last)
    engine = warehouse.make_engine(res.payments_url)
    try:
        return fetch_payments(
            engine,
            first=first,
            last=last,
            timezone=config.adperf().report_timezone,
            hmac_key=config.secrets().hmac_key,
            fx=_fx(),
            table=config.payments().table,
            query=config.payments().query or None,
        )
    finally:
        engine.dispose()


class EventLogs(LakeTask):
    """Server-log events of one report day, ids pseudonymized, malformed lines counted."""

    date = luigi.DateParameter(description="report day")
    outputs = ("events",)

    def run(self) -> None:
        from adperf.sources.logs import fetch_events

        df, counts = fetch_events(
            endpoints(self.date).logs_path,
            day=self.date,
            timezone=config.adperf().report_timezone,
            hmac_key=config.secrets().hmac_key,
            max_bad_fraction=config.logs().max_bad_fraction,
        )
        lake.write_partition(
            config.data_root(), EVENTS, "date", _iso(self.date), df, meta=counts, allow_empty=True
        )


# ---------------------------------------------------------------- transform


class Spend(LakeTask):
    """All platforms' ad-level spend of one day in the report currency."""

    date = luigi.DateParameter(description="report day")
    outputs = ("spend",)

    def requires(self) -> list[AdSpend]:
        return [AdSpend(platform=p, date=self.date) for p in PLATFORMS]

    def run(self) -> None:
        from adperf.transform.spend import build_spend

        df = build_spend([t.read() for t in self.input()], _fx())
        lake.write_partition(
            config.data_root(), SPEND, "date", _iso(self.date), df, allow_empty=True
        )


class InstallHistory(luigi.WrapperTask):
    """Every install of the history window: closed months plus the current month's days."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> list[luigi.Task]:
        months, current = _history(self.date, config.ltv().history_days)
        return [InstallsMonth(month=m) for m in months] + [Installs(date=d) for d in current]

    def read(self) -> pd.DataFrame:
        return _read_all([t.output() for t in self.requires()])


class PaymentHistory(luigi.WrapperTask):
    """Every payment of the history window: closed months plus the current month's days."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> list[luigi.Task]:
        months, current = _history(self.date, config.ltv().history_days)
        return [PaymentsMonth(month=m) for m in months] + [Payments(date=d) for d in current]

    def read(self) -> pd.DataFrame:
        return _read_all([t.output() for t in self.requires()])


class Attribution(LakeTask):
    """Revenue of one payment day by acquiring campaign, and its reconciliation."""

    date = luigi.DateParameter(description="report day")
    outputs = ("attribution", "reconciliation")

    def requires(self) -> dict[str, luigi.Task]:
        return {"payments": Payments(date=self.date), "installs": InstallHistory(date=self.date)}

    def run(self) -> None:
        from adperf.transform.attribution import (
            build_attribution,
            build_reconciliation,
            build_user_map,
        )

        day = _iso(self.date)
        payments = self.input()["payments"].read()
        attribution = build_attribution(
            day, payments, build_user_map(self.requires()["installs"].read())
        )
        recon = build_reconciliation(day, payments, attribution)
        root = config.data_root()
        lake.write_frame(
            root, "reconciliation", "date", day, pd.DataFrame([{"date": day, **recon}])
        )
        lake.write_frame(root, "attribution", "date", day, attribution)


class CohortRoas(LakeTask):
    """Cohort ROAS rows that reach their age (0, 3, 7, 14, 30) on the report day."""

    date = luigi.DateParameter(description="report day")
    outputs = ("cohort_roas",)

    def requires(self) -> dict[str, list[luigi.Task]]:
        window = _window(self.date, COHORT_WINDOW_DAYS + 1)
        return {
            "installs": [Installs(date=d) for d in window],
            "payments": [Payments(date=d) for d in window],
            "spend": [Spend(date=d) for d in window],
        }

    def run(self) -> None:
        from adperf.transform.cohort import build_cohort_roas

        inputs = {k: _read_all(v) for k, v in self.input().items()}
        df = build_cohort_roas(
            _iso(self.date), inputs["installs"], inputs["payments"], inputs["spend"]
        )
        lake.write_frame(config.data_root(), "cohort_roas", "date", _iso(self.date), df)


class Ltv(LakeTask):
    """BG/NBD + Gamma-Gamma fit on the payment history and predicted LTV of the day's cohort."""

    date = luigi.DateParameter(description="report day")
    outputs = ("ltv_model", "pltv")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "payments": PaymentHistory(date=self.date),
            "installs": InstallHistory(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.ltv import build_ltv

        day, cfg = _iso(self.date), config.ltv()
        row, pltv = build_ltv(
            day,
            self.requires()["payments"].read(),
            self.requires()["installs"].read(),
            history_days=cfg.history_days,
            horizon_days=cfg.horizon_days,
            discount_rate_annual=cfg.discount_rate,
        )
        root = config.data_root()
        lake.write_frame(root, "pltv", "date", day, pltv)
        lake.write_frame(root, "ltv_model", "date", day, pd.DataFrame([row]))


class Contribution(LakeTask):
    """Assisted revenue: PageRank over the match graph, credited to acquiring campaigns."""

    date = luigi.DateParameter(description="report day")
    outputs = ("contribution",)

    def requires(self) -> dict[str, Any]:
        window = _window(self.date, config.contribution().window_days)
        return {
            "events": [EventLogs(date=d) for d in window],
            "payments": Payments(date=self.date),
            "installs": InstallHistory(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.attribution import build_user_map
        from adperf.transform.contribution import build_contribution

        user_map = build_user_map(self.requires()["installs"].read())
        df = build_contribution(
            _iso(self.date),
            _read_all(self.input()["events"]),
            self.input()["payments"].read(),
            user_map,
            partner_share=config.contribution().partner_share,
        )
        lake.write_frame(config.data_root(), "contribution", "date", _iso(self.date), df)


class CampaignReport(LakeTask):
    """campaign_daily and the recommended actions of one report day."""

    date = luigi.DateParameter(description="report day")
    outputs = ("campaign_report", "actions")

    def requires(self) -> dict[str, Any]:
        return {
            "spend": [Spend(date=d) for d in _window(self.date, COHORT_WINDOW_DAYS + 1)],
            "installs": Installs(date=self.date),
            "attribution": Attribution(date=self.date),
            "contribution": Contribution(date=self.date),
            "ltv": Ltv(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.report import build_actions, build_campaign_report

        day, inp = _iso(self.date), self.input()
        spend_window = _read_all(inp["spend"])
        report = build_campaign_report(
            day,
            spend_window[spend_window["date"] == day],
            inp["installs"].read(),
            inp["attribution"]["attribution"].read(),
            inp["contribution"].read(),
            inp["ltv"]["pltv"].read(),
        )
        actions = build_actions(
            day,
            report,
            _first_spend_dates(spend_window),
            _rules(),
            currency=config.adperf().report_currency,
        )
        root = config.data_root()
        lake.write_frame(root, "actions", "date", day, actions)
        lake.write_frame(root, "campaign_report", "date", day, report)


def _first_spend_dates(spend: pd.DataFrame) -> dict[tuple[str, str], str]:
    paid = spend[spend["spend_micros"] > 0]
    firsts = paid.groupby(["platform", "campaign_id"])["date"].min()
    return {(str(p), str(c)): str(d) for (p, c), d in firsts.items()}


def _rules() -> Any:
    from adperf.transform.report import Rules

    r = config.rules()
    return Rules(
        target_roas=r.target_roas,
        scale_roas=r.scale_roas,
        pause_roas=r.pause_roas,
        min_spend_micros=round(r.min_spend * 1_000_000),
        min_installs=r.min_installs,
        min_age_days=r.min_age_days,
    )


# ---------------------------------------------------------------- load


class LoadReport(luigi.Task):
    """The report tables of one day, replaced in the warehouse in one transaction."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "spend": Spend(date=self.date),
            "report": CampaignReport(date=self.date),
            "cohorts": CohortRoas(date=self.date),
            "ltv": Ltv(date=self.date),
            "attribution": Attribution(date=self.date),
        }

    def output(self) -> WarehouseDay:
        return WarehouseDay(config.adperf().warehouse_url, _iso(self.date))

    def run(self) -> None:
        inp = self.input()
        cohorts = inp["cohorts"].read().rename(columns={})
        frames = {
            "ad_spend_daily": inp["spend"].read(),
            "campaign_daily": inp["report"]["campaign_report"].read(),
            "cohort_roas": cohorts,
            "ltv_model": inp["ltv"]["ltv_model"].read(),
            "revenue_reconciliation": inp["attribution"]["reconciliation"].read(),
            "actions": inp["report"]["actions"].read(),
        }
        engine = warehouse.make_engine(config.adperf().warehouse_url)
        try:
            warehouse.load_day(engine, _iso(self.date), frames)
        finally:
            engine.dispose()


class SlackReport(luigi.Task):
    """The morning Slack report of one day: posted once (token) or written to the outbox."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "load": LoadReport(date=self.date),
            "report": CampaignReport(date=self.date),
            "attribution": Attribution(date=self.date),
        }

    def output(self) -> JsonFile:
        day = _iso(self.date)
        if config.secrets().slack_token:
            return JsonFile(config.data_root() / "slack_posts" / f"{day}.json")
        return JsonFile(Path(config.slack().outbox) / f"slack-{day}.json")

    def run(self) -> None:
        from adperf.sinks.slack import build_slack_message, post_message, write_outbox

        day, inp = _iso(self.date), self.input()
        message = build_slack_message(
            day=day,
            currency=config.adperf().report_currency,
            campaigns=_as_money(inp["report"]["campaign_report"].read()),
            actions=_as_money(inp["report"]["actions"].read()),
            reconciliation=_as_money(inp["attribution"]["reconciliation"].read()).iloc[0].to_dict(),
            notes=_quality_notes(self.date),
        )
        token = config.secrets().slack_token
        if not token:
            write_outbox(message, Path(config.slack().outbox), day)
            return
        posted = post_message(
            message,
            token=token,
            channel=config.slack().channel,
            base_url=endpoints(self.date).slack_base_url,
        )
        _write_json(self.output().path, {"date": day, **posted})


class DailyReport(luigi.WrapperTask):
    """Everything for one report day: the warehouse tables and the Slack report."""

    date = luigi.DateParameter(description="report day")

    def requires(self) -> list[luigi.Task]:
        config.secrets()  # a production config without ADPERF_HMAC_KEY refuses to start
        return [LoadReport(date=self.date), SlackReport(date=self.date)]


def _as_money(df: pd.DataFrame) -> pd.DataFrame:
    """`x_micros` columns → `x` floats in currency units (for display only)."""
    out = df.copy()
    for col in [c for c in df.columns if c.endswith("_micros")]:
        out[col[: -len("_micros")]] = df[col].astype("float64") / 1_000_000
        out = out.drop(columns=col)
    return out


def _quality_notes(day: dt.date) -> list[str]:
    root, notes = config.data_root(), []
    for dataset, label in (("payments", "payment rows"), ("events", "log lines")):
        meta = lake.read_meta(root, dataset, "date", _iso(day))
        bad = meta.get("quarantined", 0) + meta.get("bad", 0)
        if bad:
            notes.append(f"{bad} {label} quarantined")
    return notes


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, sort_keys=True))
    os.replace(tmp, path)
