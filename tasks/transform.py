"""Transform tasks: lake partitions in, lake partitions out (spend, attribution, cohorts, LTV)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import luigi
import pandas as pd

from adperf import lake, ltv_models, warehouse
from adperf.errors import ConfigError
from adperf.schema import (
    ACTION_OUTCOMES,
    ACTIONS,
    ATTRIBUTION,
    CAMPAIGN_REPORT,
    COHORT_ROAS,
    COHORT_ROAS_SEGMENTS,
    PLTV,
    PLTV_DRAWS,
    PLTV_WINDOW,
    RECONCILIATION,
    SOURCE_DISCREPANCY,
    SPEND,
    to_table,
)
from adperf.timeutil import days, month_days
from tasks import config
from tasks.base import (
    COHORT_WINDOW_DAYS,
    LakeTask,
    _as_money,
    _first_row,
    _fx,
    _history,
    _iso,
    _read_all,
    _window,
)
from tasks.extract import (
    AdSpend,
    EventLogs,
    Installs,
    InstallsMonth,
    Payments,
    PaymentsMonth,
    _lookback_days,
    _platforms,
)
from tasks.targets import LakePartition, WarehouseDay


class Spend(LakeTask):
    """All platforms' ad-level spend of one day in the report currency, from that day's pulls."""

    date = luigi.DateParameter(description="report day")
    outputs = ("spend",)

    def requires(self) -> list[AdSpend]:
        return [AdSpend(platform=p, date=self.date) for p in _platforms()]

    def run(self) -> None:
        from adperf.transform.spend import build_spend

        day = _iso(self.date)
        frames = [t.read() for t in self.input()]
        df = build_spend([f[f["date"] == day] for f in frames], _fx())
        lake.write_partition(config.data_root(), SPEND, "date", day, df, allow_empty=True)


class SpendLatest(LakeTask):
    """Ad-level spend of the cohort window (31 days up to the report day), each day's figure
    from the latest pull made by the report day (later pull wins)."""

    date = luigi.DateParameter(description="report day")
    outputs = ("spend_latest",)

    def requires(self) -> list[AdSpend]:
        from adperf.transform.restatement import pull_days_for

        return [
            AdSpend(platform=p, date=d)
            for p in _platforms()
            for d in pull_days_for(self.date, COHORT_WINDOW_DAYS + 1, _lookback_days(p))
        ]

    def run(self) -> None:
        from adperf.transform.restatement import build_latest_spend

        day, pulls = _iso(self.date), _pulls(self.input())
        first = _iso(self.date - dt.timedelta(days=COHORT_WINDOW_DAYS))
        latest = build_latest_spend(pulls, first, day, _fx())
        # The windows of this day's pulls: LoadReport replaces those days in ad_spend_daily.
        windows = {p.platform: [p.first, p.last] for p in pulls if p.pulled == day}
        table = to_table(latest, SPEND, allow_empty=True)
        root = config.data_root()
        lake.write_table(root, "spend_latest", "date", day, table, meta={"windows": windows})


class Restatements(LakeTask):
    """How much the report day's pulls changed earlier days' spend (vs. the day before's)."""

    date = luigi.DateParameter(description="report day")
    outputs = ("restatements",)

    def requires(self) -> list[AdSpend]:
        before = self.date - dt.timedelta(days=1)
        return [AdSpend(platform=p, date=d) for p in _platforms() for d in (before, self.date)]

    def run(self) -> None:
        from adperf.transform.restatement import build_day_restatements, convert_pulls

        day = _iso(self.date)
        df = build_day_restatements(day, convert_pulls(_pulls(self.input()), _fx()))
        lake.write_frame(config.data_root(), "restatements", "date", day, df)


def _pulls(targets: list[LakePartition]) -> list[Any]:
    """AdSpend outputs as restatement.Pull objects (window from the partition's meta)."""
    from adperf.transform.restatement import Pull

    out = []
    for t in targets:
        meta = t.meta()
        out.append(Pull(meta["platform"], t.value, meta["first_day"], meta["last_day"], t.read()))
    return out


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
        recon_row = pd.DataFrame([{"date": day, **recon}])
        lake.write_partition(root, RECONCILIATION, "date", day, recon_row)
        lake.write_partition(root, ATTRIBUTION, "date", day, attribution, allow_empty=True)


class CohortRoas(LakeTask):
    """The cohort triangle as of the report day: every cohort of the window (30 days to it) at
    every age (0, 3, 7, 14, 30) it has reached."""

    date = luigi.DateParameter(description="report day")
    outputs = ("cohort_roas",)
    dataset = COHORT_ROAS  # its columns, checked when written

    def requires(self) -> dict[str, list[luigi.Task]]:
        window = _window(self.date, COHORT_WINDOW_DAYS + 1)
        return {
            "installs": [Installs(date=d) for d in window],
            "payments": [Payments(date=d) for d in window],
            "spend": [SpendLatest(date=self.date)],  # the window, latest figures
        }

    def build(self, inputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
        from adperf.transform.cohort import build_cohort_roas

        args = (inputs["installs"], inputs["payments"], inputs["spend"])
        return build_cohort_roas(_iso(self.date), *args, window_days=COHORT_WINDOW_DAYS)

    def run(self) -> None:
        inputs = {k: _read_all(v) for k, v in self.input().items()}
        df = self.build(inputs)
        root, day = config.data_root(), _iso(self.date)
        lake.write_partition(root, self.dataset, "date", day, df, allow_empty=True)


class CohortRoasSegments(CohortRoas):
    """The cohort triangle as of the report day by the MMP's country and device OS (spend
    shared among a campaign's segments by installs)."""

    outputs = ("cohort_roas_segments",)
    dataset = COHORT_ROAS_SEGMENTS

    def build(self, inputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
        from adperf.transform.cohort import build_cohort_roas_segments

        args = (inputs["installs"], inputs["payments"], inputs["spend"])
        return build_cohort_roas_segments(_iso(self.date), *args, window_days=COHORT_WINDOW_DAYS)


class LtvModel(LakeTask):
    """BG/NBD + Gamma-Gamma fitted on the payment history alone: the day's `ltv_model` row, in
    the lake and the warehouse. Needs payments (and FX) only: no MMP, logs or ad platform, so a
    team without an MMP still gets customer LTV."""

    date = luigi.DateParameter(description="report day = end of the fitted history")
    outputs = ("ltv_model",)

    def requires(self) -> PaymentHistory:
        return PaymentHistory(date=self.date)

    def output(self) -> dict[str, Any]:
        url = config.adperf().warehouse_url
        return {
            "ltv_model": LakePartition(config.data_root(), "ltv_model", "date", _iso(self.date)),
            "warehouse": WarehouseDay(url, _iso(self.date), marker="ltv_model"),
        }

    def run(self) -> None:
        from adperf.transform.ltv import build_ltv_model

        self.progress(10, f"fitting BG/NBD + Gamma-Gamma on the payment history to {self.date}")
        day = _iso(self.date)
        previous_date, previous = _previous_ltv_model(self.date)
        row = build_ltv_model(
            day,
            self.requires().read(),
            history_days=config.ltv().history_days,
            horizon_days=config.ltv().horizon_days,
            initial=previous,
            initial_date=previous_date,
        )
        frame = pd.DataFrame([row])
        # The warehouse first: the lake partition, written last, completes the task.
        _load_tables(day, {"ltv_model": frame}, marker="ltv_model")
        lake.write_frame(config.data_root(), "ltv_model", "date", day, frame)


class Ltv(LakeTask):
    """The day's cohort pLTV per campaign and adset with its interval, valued with the day's
    LtvModel; that model's 90-day backtest against each campaign's revenue; the install
    cohorts of the `[rules] window_days` days to it pooled, with their bootstrap draws."""

    date = luigi.DateParameter(description="report day")
    outputs = ("pltv", "ltv_backtest", "pltv_window", "pltv_draws")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "model": LtvModel(date=self.date),
            "payments": PaymentHistory(date=self.date),
            "installs": InstallHistory(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.ltv import BACKTEST_DAYS, build_pltv, build_pltv_window

        self.progress(10, f"valuing the install cohorts to {self.date}")
        day, cfg = _iso(self.date), config.ltv()
        model = _first_row(self.input()["model"]["ltv_model"].read())
        payments, installs = (self.requires()[n].read() for n in ("payments", "installs"))
        history = {"history_days": cfg.history_days, "horizon_days": cfg.horizon_days}
        backtest, pltv = build_pltv(
            day,
            model,
            payments,
            installs,
            **history,
            discount_rate_annual=cfg.discount_rate,
            backtest_model=_stored_ltv_model(self.date - dt.timedelta(days=BACKTEST_DAYS)),
        )
        window, draws = build_pltv_window(
            day,
            model,
            payments,
            installs,
            window_days=config.rules().window_days,
            **history,
            discount_rate_annual=cfg.discount_rate,
        )
        root = config.data_root()
        lake.write_partition(root, PLTV, "date", day, pltv, allow_empty=True)
        lake.write_frame(root, "ltv_backtest", "date", day, _backtest_frame(backtest))
        lake.write_partition(root, PLTV_WINDOW, "date", day, window, allow_empty=True)
        lake.write_partition(root, PLTV_DRAWS, "date", day, draws, allow_empty=True)


def _backtest_frame(row: dict[str, Any]) -> pd.DataFrame:
    """One backtest row with its column types (nulls included)."""
    return pd.DataFrame([row]).astype(
        {
            "backtest_mape": "float64",
            "backtest_bias": "float64",
            "backtest_campaigns": "Int64",
            "backtest_model": "string",
        }
    )


def _load_tables(day: str, frames: dict[str, pd.DataFrame], marker: str) -> None:
    """Replace some tables of a day in the warehouse (one transaction, with `marker`)."""
    warehouse.load_day_at(config.adperf().warehouse_url, day, frames, marker=marker)


def _previous_ltv_model(day: dt.date) -> tuple[str | None, Any]:
    """(model_date, model) of the newest usable stored LTV model before `day` (a warm start)."""
    return ltv_models.previous_ltv_model(config.data_root(), day)


def _stored_ltv_model(day: dt.date) -> Any:
    """The model fitted as of `day`, or None: the backtest's model, not fitted again."""
    return ltv_models.stored_ltv_model(config.data_root(), day)


class Contribution(LakeTask):
    """Assisted revenue: PageRank over the match graph, credited to acquiring campaigns."""

    date = luigi.DateParameter(description="report day")
    outputs = ("contribution",)
    # Run early (luigi passes a task's priority on to what it requires): its window's EventLogs
    # and the PageRank otherwise start last and run alone at the end of a cold run (16 s of 138
    # on the large world with 2 workers).
    priority = 10

    def requires(self) -> dict[str, Any]:
        window = _window(self.date, config.contribution().window_days)
        return {
            "events": [EventLogs(date=d) for d in window],
            "payments": Payments(date=self.date),
            "installs": InstallHistory(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.attribution import build_user_map
        from adperf.transform.contribution import build_contribution_from_edges

        self.progress(10, f"PageRank over the match graph of the {self.date} window")
        user_map = build_user_map(self.requires()["installs"].read())
        # The window's daily match edges, not its raw events: a pair's matches of a day are
        # one row (the log extract counts them), so 28 days stay small in memory.
        df = build_contribution_from_edges(
            _iso(self.date),
            _read_all([day["match_edges"] for day in self.input()["events"]]),
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
            "spend": [SpendLatest(date=self.date)],  # the 31-day window, latest figures
            "installs": Installs(date=self.date),
            "attribution": Attribution(date=self.date),
            "contribution": Contribution(date=self.date),
            "ltv": Ltv(date=self.date),
            "outcomes": ActionOutcomes(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.report import build_report_day
        from adperf.transform.response import build_budget_response

        day, inp = _iso(self.date), self.input()
        outcomes = inp["outcomes"].read()
        report, actions = build_report_day(
            day,
            spend_window=_read_all(inp["spend"]),
            installs=inp["installs"].read(),
            attribution=inp["attribution"]["attribution"].read(),
            contribution=inp["contribution"].read(),
            pltv=inp["ltv"]["pltv"].read(),
            pltv_window=inp["ltv"]["pltv_window"].read(),
            pltv_draws=inp["ltv"]["pltv_draws"].read(),
            rules=_rules(),
            currency=config.adperf().report_currency,
            pooled=config.rules().pooled,
            response=build_budget_response(_outcome_history(self.date, outcomes)),
        )
        actions = _with_follow_ups(day, actions, outcomes)
        root = config.data_root()
        lake.write_partition(root, ACTIONS, "date", day, actions, allow_empty=True)
        lake.write_partition(root, CAMPAIGN_REPORT, "date", day, report, allow_empty=True)


def _rules() -> Any:
    from adperf.transform.decide import Rules

    r = config.rules()
    if r.window_days > COHORT_WINDOW_DAYS + 1:
        raise ConfigError(
            f"[rules] window_days = {r.window_days}, but SpendLatest holds the "
            f"{COHORT_WINDOW_DAYS + 1} days to the report day. Fix: {COHORT_WINDOW_DAYS + 1} or "
            "fewer"
        )
    return Rules(
        target_roas=r.target_roas,
        scale_roas=r.scale_roas,
        pause_roas=r.pause_roas,
        min_spend_micros=round(r.min_spend * 1_000_000),
        min_installs=r.min_installs,
        min_age_days=r.min_age_days,
        window_days=r.window_days,
        confidence=r.confidence,
        cpi_days=r.cpi_days,
        scale_factor=config.actions().scale_factor,
    )


def _outcome_history(day: dt.date, today: pd.DataFrame) -> pd.DataFrame:
    """The follow-ups of the response.HISTORY_DAYS to `day`: the earlier days' `action_outcomes`
    partitions present (written by their own report days' runs, not required: a first run has
    none) and `today`'s."""
    from adperf.transform.response import HISTORY_DAYS

    first, yesterday = day - dt.timedelta(days=HISTORY_DAYS - 1), day - dt.timedelta(days=1)
    earlier = _present_partitions(ACTION_OUTCOMES.name, first, yesterday)
    parts = [today, *earlier] if len(today) else earlier
    return pd.concat(parts, ignore_index=True) if parts else today


class Watch(LakeTask):
    """The watch of one report day (adperf.transform.watch): what changed beyond normal noise,
    and each paid campaign's platform-reported vs MMP installs (source_discrepancy).

    Earlier days come from the warehouse as loaded, like RenderReport's history: reading them is
    not a dependency, so a day watched before its baseline days were loaded (a backfill out of
    order) has fewer checks, never wrong ones.
    """

    date = luigi.DateParameter(description="report day")
    outputs = ("watch", "source_discrepancy")

    def requires(self) -> dict[str, luigi.Task]:
        return {
            "report": CampaignReport(date=self.date),
            "cohorts": CohortRoas(date=self.date),
            "attribution": Attribution(date=self.date),
            "spend": SpendLatest(date=self.date),  # the day's reported installs; month to date
        }

    def run(self) -> None:
        from adperf.transform.watch import build_watch_day

        day, inp, settings = _iso(self.date), self.input(), config.watch_settings()
        discrepancy, found = build_watch_day(
            day,
            campaigns=_as_money(inp["report"]["campaign_report"].read()),
            cohorts=inp["cohorts"].read(),
            reconciliation=_as_money(inp["attribution"]["reconciliation"].read()),
            spend=_as_money(inp["spend"].read()),
            history=_watch_history(self.date, settings),
            plan=config.budget_plan(),
            settings=settings,
            currency=config.adperf().report_currency,
        )
        root = config.data_root()
        lake.write_partition(root, SOURCE_DISCREPANCY, "date", day, discrepancy, allow_empty=True)
        lake.write_frame(root, "watch", "date", day, found)


def _watch_history(day: dt.date, settings: Any) -> dict[str, pd.DataFrame]:
    """campaign_daily, cohort_roas and revenue_reconciliation of the watch's baseline days
    before `day`, as loaded in the warehouse."""
    back = max(7 * settings.baseline_weeks, settings.share_days)
    first, last = _iso(day - dt.timedelta(days=back)), _iso(day - dt.timedelta(days=1))
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        campaigns = warehouse.read_days(engine, "campaign_daily", first, last)
        # A triangle cell is stored as of the latest report that computed it (up to 30 days on).
        far = _iso(day + dt.timedelta(days=COHORT_WINDOW_DAYS))
        cohorts = warehouse.read_days(engine, "cohort_roas", first, far)
        recon = warehouse.read_days(engine, "revenue_reconciliation", first, last)
    finally:
        engine.dispose()
    cohorts = cohorts[cohorts["cohort_date"].astype(str).between(first, last)]
    for df in (campaigns, cohorts, recon):
        for col in ("spend", "revenue", "total_payments", "unattributed", "restricted"):
            if col in df.columns:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return {"campaigns": campaigns, "cohorts": cohorts, "reconciliation": recon}


class ActionOutcomes(LakeTask):
    """The follow-ups due on the report day: each action applied `[rules] follow_up_days`
    before it, its object's spend, installs, CPI and pROAS since the change against before.

    The earlier days' installs and pLTV come from their lake partitions and the actions from
    the warehouse (`action_log`, `actions`), read when present, not required: an action is
    applied after its day's report, so the day it is followed up on has them.
    """

    date = luigi.DateParameter(description="report day")
    outputs = ("action_outcomes",)

    def requires(self) -> dict[str, Any]:
        return {
            "spend": SpendLatest(date=self.date),  # 31 days: before and since, latest figures
            "installs": InstallHistory(date=self.date),
            "ltv": Ltv(date=self.date),
        }

    def run(self) -> None:
        from adperf.transform.outcomes import build_action_outcomes, build_object_days

        day, rules = _iso(self.date), _follow_up_rules()
        first = self.date - dt.timedelta(days=2 * rules.follow_up_days - 1)
        due = self.date - dt.timedelta(days=rules.follow_up_days)
        log, decisions = _warehouse_actions((due, due), due)
        installs = _installs_between(self.requires()["installs"], first, self.date)
        daily = build_object_days(self.input()["spend"].read(), installs, _pltv_days(first, day))
        outcomes = build_action_outcomes(
            day, rules, log, decisions, daily, config.adperf().report_currency
        )
        lake.write_partition(
            config.data_root(), ACTION_OUTCOMES, "date", day, outcomes, allow_empty=True
        )


def _follow_up_rules() -> Any:
    from adperf.transform.outcomes import FollowUpRules

    r, a = config.rules(), config.actions()
    return FollowUpRules(
        follow_up_days=r.follow_up_days,
        scale_roas=r.scale_roas,
        pause_roas=r.pause_roas,
        target_roas=r.target_roas,
        scale_factor=a.scale_factor,
        max_budget_increase=a.max_budget_increase,
    )


def _warehouse_actions(
    log_days: tuple[dt.date, dt.date], action_day: dt.date | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(action_log rows of the report days `log_days`, actions of `action_day`) from the
    warehouse; empty where absent (and the actions empty without an `action_day`)."""
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        log = warehouse.read_action_log(engine, _iso(log_days[0]), _iso(log_days[1]))
        decisions = (
            warehouse.read_days(engine, "actions", _iso(action_day), _iso(action_day))
            if action_day is not None
            else pd.DataFrame()
        )
    finally:
        engine.dispose()
    return log, decisions


def _installs_between(history: luigi.Task, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The installs of [first, last] from the install history's partitions covering them."""
    parts = []
    for task in history.requires():
        if isinstance(task, Installs) and not first <= task.date <= last:
            continue
        if isinstance(task, InstallsMonth) and not (
            month_days(task.month)[1] >= first and month_days(task.month)[0] <= last
        ):
            continue
        parts.append(task.output())
    df = _read_all(parts)
    if not len(df):
        return pd.DataFrame(columns=["date", "platform", "campaign_id", "adset_id"])
    dates = df["date"].astype("str")
    return df.loc[(dates >= _iso(first)) & (dates <= _iso(last))]


def _pltv_days(first: dt.date, last: str) -> pd.DataFrame:
    """The `pltv` partitions (each day's cohort valued that day) of [first, last] present."""
    frames = _present_partitions("pltv", first, dt.date.fromisoformat(last))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["level"])


def _present_partitions(dataset: str, first: dt.date, last: dt.date) -> list[pd.DataFrame]:
    """The non-empty date partitions of `dataset` in [first, last] that exist in the lake (read
    when present, not required: their report days' runs wrote them, or not yet)."""
    root, frames = config.data_root(), []
    for d in days(first, last):
        if lake.partition_exists(root, dataset, "date", _iso(d)):
            frames.append(lake.read_partition(root, dataset, "date", _iso(d)))
    return [f for f in frames if len(f)]


def _with_follow_ups(day: str, actions: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """The day's actions with the follow-ups' scale backs and the week cap's expands."""
    from adperf.transform.outcomes import WEEK_DAYS, with_follow_ups

    # The log of the week before only (its budget cap): the day's own actions are `actions`.
    week = (dt.date.fromisoformat(day) - dt.timedelta(days=WEEK_DAYS), dt.date.fromisoformat(day))
    log, _ = _warehouse_actions(week, None)
    return with_follow_ups(actions, outcomes, log, day, _follow_up_rules())
