"""`adperf` command line: `adperf demo` runs the whole pipeline on the sandbox world; `adperf run`
and `adperf backfill` run the pipeline's tasks with a progress line (luigi's log in a file)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import luigi

from adperf import platforms
from tasks import progress


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `adperf` console script."""
    parser = argparse.ArgumentParser(prog="adperf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build the sandbox world and run DailyReport on it")
    demo.add_argument(
        "--date",
        type=dt.date.fromisoformat,
        default=None,
        help="report day (default: the world's latest complete day)",
    )
    _run_options(demo)
    run = sub.add_parser("run", help="run one task of one day (e.g. DailyReport) through luigi")
    run.add_argument("task", help="task family with a date parameter, e.g. DailyReport")
    run.add_argument("--date", type=dt.date.fromisoformat, required=True, help="report day")
    _run_options(run, scheduler=True)
    backfill = sub.add_parser(
        "backfill", help="run DailyReport over a range of days (luigi's RangeDaily)"
    )
    backfill.add_argument(
        "--start", type=dt.date.fromisoformat, required=True, help="first day (inclusive)"
    )
    backfill.add_argument(
        "--stop", type=dt.date.fromisoformat, required=True, help="last day (exclusive)"
    )
    backfill.add_argument("--of", default="DailyReport", help="daily task (default DailyReport)")
    _run_options(backfill, scheduler=True)
    status = sub.add_parser("status", help="complete / failed / missing tasks of the last days")
    status.add_argument("--end", type=dt.date.fromisoformat, default=None, help="last day shown")
    status.add_argument("--days", type=int, default=7, help="number of days (default 7)")
    sub.add_parser(
        "luigid", help="start the central scheduler (flags: adperf luigid -h)", add_help=False
    )
    actions = sub.add_parser("actions", help="the recommended scale / pause actions")
    actions_sub = actions.add_subparsers(dest="actions_command", required=True)
    apply = actions_sub.add_parser(
        "apply", help="apply a day's actions through the platform APIs (dry run unless --yes)"
    )
    apply.add_argument("--date", type=dt.date.fromisoformat, required=True, help="report day")
    apply.add_argument("--yes", action="store_true", help="make the changes (default: dry run)")
    apply.add_argument("--platform", choices=platforms.with_actions(), default=None)
    apply.add_argument("--by", default=None, help="who applies, for action_log (default: OS user)")
    apply.add_argument(
        "--expand",
        action="store_true",
        help="also make the expand copies (Facebook adset copies, PAUSED unless [actions] "
        "expand_active); without it they are listed and skipped",
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "luigid":
        from tasks import luigid

        return luigid.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "status":
        from tasks import status as status_cmd

        return status_cmd.main(args.end, args.days)
    if args.command == "demo":
        return run_demo(args.date, args.workers, verbose=args.verbose)
    if args.command == "run":
        return run_task(
            args.task, args.date, args.workers, verbose=args.verbose, scheduler=args.scheduler_url
        )
    if args.command == "backfill":
        return run_backfill(
            args.of,
            args.start,
            args.stop,
            args.workers,
            verbose=args.verbose,
            scheduler=args.scheduler_url,
        )
    if args.command == "actions":
        from tasks import actions as actions_cmd

        return actions_cmd.main(
            args.date, yes=args.yes, platform=args.platform, by=args.by, expand=args.expand
        )
    return 2


def _run_options(parser: argparse.ArgumentParser, *, scheduler: bool = False) -> None:
    parser.add_argument("--workers", type=int, default=1, help="luigi workers")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="luigi's log on the terminal too (it always goes to a file under var/log/)",
    )
    if scheduler:
        parser.add_argument(
            "--scheduler-url",
            default=None,
            help="a luigid to schedule with, e.g. http://localhost:8082/ (default: in-process)",
        )


def run_demo(day: dt.date | None, workers: int, *, verbose: bool = False) -> int:
    """Build (or extend) the world under var/, run DailyReport through Luigi, print a summary."""
    cfg = luigi.configuration.get_config()
    if not cfg.has_option("adperf", "sandbox"):
        # No luigi.cfg here: the embedded defaults are the sandbox's.
        cfg.set("adperf", "sandbox", "true")
    if not cfg.has_option("adperf", "load_comparison_days"):
        # The first report then has its d/d and w/w columns: the world has those days.
        cfg.set("adperf", "load_comparison_days", "true")
    from tasks import config
    from tasks.load import DailyReport
    from tasks.resources import ensure_sandbox_world, resources

    if not config.adperf().sandbox:
        print("adperf demo runs only on the sandbox: set [adperf] sandbox = true", file=sys.stderr)
        return 2
    started = time.monotonic()
    end = day or _yesterday(config.adperf().report_timezone)
    # A cold world takes a few seconds to build: say what is happening first.
    print(f"sandbox world {config.sandbox().root}: ", end="", flush=True)
    meta = ensure_sandbox_world(end)
    print(
        f"{meta['start']} .. {meta['end']} (profile {meta['profile']}, seed {meta['seed']})",
        flush=True,
    )
    resources(end)  # start the fakes now, in their own process (tasks/resources.py)
    outcome = progress.build(
        [DailyReport(date=end)],
        title=f"DailyReport {end}",
        log=progress.log_path("demo", config.adperf().data_root),
        verbose=verbose,
        workers=workers,
    )
    elapsed = time.monotonic() - started
    if not outcome.succeeded:
        return outcome.code
    print(_summary(end, config))
    print(f"log:       {outcome.log.resolve()}")
    print(f"\ndone in {elapsed:.1f} s")
    return 0


def run_task(
    family: str, day: dt.date, workers: int, *, verbose: bool = False, scheduler: str | None = None
) -> int:
    """`adperf run TASK --date D`: one task (and what it needs) with a progress line."""
    from tasks import config

    task_cls = _task_class(family)
    if task_cls is None or "date" not in task_cls.get_param_names():
        print(f"adperf run: no task {family!r} with a --date (e.g. DailyReport)", file=sys.stderr)
        return 2
    _start_sandbox(day)
    return progress.build(
        [task_cls(date=day)],
        title=f"{family} {day}",
        log=progress.log_path("run", config.adperf().data_root),
        verbose=verbose,
        workers=workers,
        **_scheduler_params(scheduler),
    ).code


def run_backfill(
    family: str,
    start: dt.date,
    stop: dt.date,
    workers: int,
    *,
    verbose: bool = False,
    scheduler: str | None = None,
) -> int:
    """`adperf backfill --start --stop`: RangeDaily over the days, every missing day at once."""
    from luigi.tools.range import RangeDaily

    from tasks import config

    task_cls = _task_class(family)
    if task_cls is None or "date" not in task_cls.get_param_names():
        print(f"adperf backfill: no daily task {family!r}", file=sys.stderr)
        return 2
    if stop <= start:
        print("adperf backfill: --stop must be after --start (it is exclusive)", file=sys.stderr)
        return 2
    _start_sandbox(stop - dt.timedelta(days=1))
    with warnings.catch_warnings():
        # luigi's own RangeDaily default (param_name=None) warns that it is not a string.
        warnings.filterwarnings("ignore", 'Parameter "param_name" with value "None"')
        # task_limit: RangeDaily would require only 50 missing days per run otherwise.
        task = RangeDaily(of=task_cls, start=start, stop=stop, task_limit=(stop - start).days)
    return progress.build(
        [task],
        title=f"{family} {start} .. {stop - dt.timedelta(days=1)}",
        log=progress.log_path("backfill", config.adperf().data_root),
        verbose=verbose,
        workers=workers,
        **_scheduler_params(scheduler),
    ).code


def _task_class(family: str) -> type[luigi.Task] | None:
    from luigi.task_register import Register, TaskClassException

    import tasks  # noqa: F401 - registers the task families

    try:
        cls: type[luigi.Task] = Register.get_task_cls(family)
    except TaskClassException:
        return None
    return cls


def _start_sandbox(last_day: dt.date) -> None:
    """In the sandbox, the world covers `last_day` and its fakes run before luigi forks."""
    from tasks import config
    from tasks.resources import resources

    if config.adperf().sandbox:
        resources(last_day)


def _scheduler_params(url: str | None) -> dict[str, Any]:
    return {"local_scheduler": False, "scheduler_url": url} if url else {}


def _summary(day: dt.date, config) -> str:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from adperf import warehouse

    engine = warehouse.make_engine(config.adperf().warehouse_url)
    with engine.connect() as conn:
        camp = (
            conn.execute(
                sa.select(warehouse.campaign_daily)
                .where(warehouse.campaign_daily.c.date == day)
                .order_by(
                    warehouse.campaign_daily.c.platform, warehouse.campaign_daily.c.spend.desc()
                )
            )
            .mappings()
            .all()
        )
        recon = (
            conn.execute(
                sa.select(warehouse.revenue_reconciliation).where(
                    warehouse.revenue_reconciliation.c.date == day
                )
            )
            .mappings()
            .first()
        )
        acts = (
            conn.execute(sa.select(warehouse.actions).where(warehouse.actions.c.date == day))
            .mappings()
            .all()
        )
    engine.dispose()
    cur = config.adperf().report_currency
    lines = [f"\nadperf report for {day} ({cur})", ""]
    head = (
        f"{'platform':<10} {'campaign':<28} {'spend':>11} {'inst':>6} {'CPI':>7} "
        f"{'revenue':>10} {'ROAS':>6} {'pROAS':>6}"
    )
    lines += [head, "-" * len(head)]
    for r in camp:
        lines.append(
            f"{r['platform']:<10} {str(r['campaign_name'] or r['campaign_id'])[:28]:<28} "
            f"{float(r['spend']):>11,.2f} {r['installs']:>6} {_num(r['cpi'], 2):>7} "
            f"{float(r['revenue']):>10,.2f} {_num(r['roas'], 2):>6} {_num(r['proas'], 2):>6}"
        )
    if recon:
        lines += [
            "",
            f"revenue {float(recon['total_payments']):,.2f} = attributed "
            f"{float(recon['attributed']):,.2f} + organic {float(recon['organic']):,.2f} + "
            f"unattributed {float(recon['unattributed']):,.2f} + "
            f"restricted {float(recon['restricted'] or 0):,.2f}",
        ]
    for a in acts:
        if a["action"] != "hold":
            # `unscale` is the column's 8-character name of a scale back.
            label = "scale back" if a["action"] == "unscale" else str(a["action"])
            lines.append(f"{label.upper():<6} {a['object_name'] or a['object_id']}: {a['reason']}")
    lines += [
        "",
        f"warehouse: {config.adperf().warehouse_url}",
        f"lake:      {_lake_where(config.adperf().data_root)}",
        *_report_lines(day, config),
    ]
    return "\n".join(lines)


def _lake_where(data_root: str) -> str:
    """The lake for people: an s3:// root as it is, a folder resolved."""
    return data_root if "://" in data_root else str(Path(data_root).resolve())


def _report_lines(day: dt.date, config) -> list[str]:  # type: ignore[no-untyped-def]
    """Where the day's HTML report is, and where the Slack report went (post or outbox files).

    The report folder and the Slack marker are in the shared store (adperf.files): files_root,
    or the lake's bucket when the lake is s3:// (its stable-key copies are what people open).
    """
    from adperf.files import read_json, report_folder, slack_marker
    from adperf.sinks.dashboard import DASHBOARD_FILE
    from adperf.sinks.render import HTML_FILE

    shared, folder = config.shared_files(), report_folder(day.isoformat())
    lines = [f"report:    {_lake_where(shared.where(f'{folder}/{HTML_FILE}'))}"]
    # The interactive page beside it (tasks.load.Dashboard): open it in any browser, offline.
    lines.append(f"dashboard: {_lake_where(shared.where(f'{folder}/{DASHBOARD_FILE}'))}")
    marker = read_json(shared, slack_marker(day.isoformat())) or {}
    if marker.get("delivery") == "slack":
        lines.append(f"slack:     posted to {marker['channel']} (ts {marker['ts']})")
    else:
        files = marker.get("files") or []
        for i, name in enumerate(files):
            lines.append(f"{'slack:' if i == 0 else '':<10} {Path(name).resolve()}")
        if files:
            lines.append(f"{'':<10} (outbox: set ADPERF_SLACK_TOKEN to post to Slack)")
    return lines


def _num(v: object, digits: int) -> str:
    return "-" if v is None else f"{float(v):.{digits}f}"  # type: ignore[arg-type]


def _yesterday(tz: str) -> dt.date:
    from adperf.timeutil import zone

    return dt.datetime.now(zone(tz)).date() - dt.timedelta(days=1)


if __name__ == "__main__":
    raise SystemExit(main())
