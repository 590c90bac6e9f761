"""`adperf actions apply --date D [--yes] [--expand]`: the day's scale / pause / scale back
(and with --expand, expand) actions, applied through the ad platforms' APIs (dry run by
default). Wiring only: config, resources, the platform clients; the planning and logging are
adperf.actions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import os
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from adperf import platforms, warehouse
from adperf.actions import (
    CHANGE,
    FAILED,
    Change,
    Platform,
    Recommendation,
    Settings,
    Target,
    apply_changes,
    read_recommendations,
    render,
    run_day,
)
from adperf.errors import AdperfError
from tasks import config, progress, resources

PLATFORMS = platforms.with_actions()


def main(
    day: dt.date,
    *,
    yes: bool,
    platform: str | None = None,
    by: str | None = None,
    expand: bool = False,
) -> int:
    """Print the plan (and with `yes`, apply it): 0 when nothing failed, 1 otherwise, 2 when
    the day cannot be planned at all. `expand`: make the expand copies too (opt-in)."""
    try:
        return _run(day, yes=yes, platform=platform, by=by, expand=expand)
    except AdperfError as exc:
        print(f"adperf actions apply {day}: {exc}", file=sys.stderr)
        return 2


def _run(
    day: dt.date, *, yes: bool, platform: str | None, by: str | None, expand: bool = False
) -> int:
    iso = day.isoformat()
    settings = Settings(
        scale_factor=config.actions().scale_factor,
        max_budget_increase=config.actions().max_budget_increase,
        expand=expand,
        expand_active=config.actions().expand_active,
    )
    settings.check()
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        if not warehouse.is_loaded(engine, iso):
            print(
                f"adperf actions apply: no report for {iso} in the warehouse "
                f"({config.adperf().warehouse_url}). Fix: run "
                f"`luigi --module tasks DailyReport --date {iso}` (or `adperf demo --date "
                f"{iso}` in the sandbox) first",
                file=sys.stderr,
            )
            return 2
        recs = read_recommendations(engine, iso, [platform] if platform else PLATFORMS)
        clients = _clients(day, sorted({r.platform for r in recs}))
        try:
            who = by or _os_user()
            # run_day(yes=True) is this plan, then apply_changes: split to count the changes.
            changes = run_day(engine, iso, clients, settings, yes=False, applied_by=who)
            if yes:
                changes = _apply(engine, iso, changes, clients, who)
        finally:
            for client in clients.values():
                client.close()
    finally:
        engine.dispose()
    print(render(iso, changes, dry_run=not yes))
    failed = [c for c in changes if c.outcome == FAILED]
    for change in failed:
        print(f"\nFAILED {change.target.platform} {change.target.level} "
              f"{change.target.object_id}: {change.note}", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _clients(day: dt.date, names: list[str]) -> dict[str, Platform]:
    """The platform clients needed (only those: an unconfigured platform with nothing to do is
    no error): each registry entry's action client, given the endpoint of tasks/resources.py's
    function of its name and its config section's action_settings()."""
    out: dict[str, Platform] = {}
    for entry in platforms.entries():
        if entry.name not in names or entry.actions is None:
            continue
        endpoint = getattr(resources, entry.name)(day)
        settings = getattr(config, entry.section)().action_settings()
        out[entry.name] = entry.load_actions()(**dataclasses.asdict(endpoint), **settings, day=day)
    return out


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container without a passwd entry)
        return f"uid {os.getuid()}"


def _apply(
    engine: sa.Engine, day: str, changes: Sequence[Change], clients: dict[str, Platform], who: str
) -> list[Change]:
    """apply_changes with a progress line on stderr: one API call per change, each a while."""
    todo = [c for c in changes if c.outcome == CHANGE]
    if not todo:
        return apply_changes(engine, day, changes, clients, who)
    bar = progress.Progress(f"actions apply {day}", sys.stderr, unit="change")
    for change in todo:
        bar.added({"task_id": _key(change), "status": "PENDING", "runnable": True})
    watched: dict[str, Platform] = {name: _Watched(c, bar) for name, c in clients.items()}
    bar.start()
    try:
        return apply_changes(engine, day, changes, watched, who)
    finally:
        bar.close()


class _Watched:
    """A platform client whose apply() calls move the progress line."""

    def __init__(self, client: Platform, bar: progress.Progress) -> None:
        self.client, self.bar, self.name = client, bar, client.name

    def targets(self, recommendations: Sequence[Recommendation]) -> list[Target]:
        return self.client.targets(recommendations)

    def apply(self, change: Change) -> str | None:
        t = change.target
        name = f"{t.action} {t.platform}"
        params = {"object": t.object_name or t.object_id, change.field: change.after}
        self.bar.got_work({"task_id": _key(change), "task_family": name, "task_params": params})
        status = "FAILED"
        try:
            made = self.client.apply(change)
            status = "DONE"
        finally:  # the error itself is printed with the table (main)
            self.bar.added({"task_id": _key(change), "status": status})
        return made

    def close(self) -> None:
        self.client.close()


def _key(change: Change) -> str:
    t = change.target
    return f"{t.platform}/{t.level}/{t.object_id}/{change.field}"
