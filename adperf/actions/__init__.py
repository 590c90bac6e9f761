"""Applying the recommended actions of one report day to the ad platforms, opt-in and logged.

`actions` (the warehouse table) says what to do per campaign and adset; this package turns its
`scale` / `pause` rows into changes of real objects and, when asked, makes them:

- Facebook changes adsets (`status` PAUSED, `daily_budget` in minor units of the account's
  currency), where budgets live without campaign budget optimization. A campaign-level action
  applies to each of the campaign's adsets, except those with a scale / pause of their own: the
  adset's own evidence is the more specific. An adset without a daily budget (its campaign
  optimizes the budget) is skipped for a scale, with a note.
- Google Ads changes campaigns: `campaign.status` PAUSED and the campaign budget's
  `amount_micros`. Ad group actions are recommendations only (Google Ads has no ad group
  budget); a shared budget is never scaled (it would scale other campaigns too).
- A scale multiplies the current budget by `scale_factor`, rounded to the platform's step; a
  factor above 1 + `max_budget_increase` is refused. An `unscale` ("scale back", recommended
  when a scaled object's pROAS fell below scale_roas since: adperf.transform.outcomes) divides
  it by `scale_factor`, through the same calls.
- An `expand` (a winner whose budget already went up as far as the week allows) copies the
  adset with its ads on Facebook (the adset copies edge), PAUSED unless `expand_active`; only
  with `expand` set (`adperf actions apply --expand`), else it is shown and skipped. Platforms
  without such a call (Google Ads) refuse it by name. A copy is claimed and checked against
  the log like a scale: one copy per object and day.
- Idempotent: a pause is checked against the object's current status (already PAUSED: no
  change); a scale is checked against `action_log` (already applied for this day and object: no
  change), because a budget read back cannot tell "scaled" from "set so by hand". Each change is
  logged `pending` before the API call and `applied` / `failed` after it, so a run killed
  mid-call leaves a `pending` row and the next run refuses to scale that object again blind.
- Concurrent: a scale's `pending` row claims (date, platform, object, field) through a unique
  key of `action_log`, inserted in its own transaction before the API call; a second apply
  running at the same moment fails that insert and skips the object ("claimed by another
  apply"). A failed change releases its claim. Pauses need no claim: pausing twice is harmless.

Planning is pure (`plan_changes`); the platforms are injected (`Platform`), so tests and the
sandbox drive the real SDK clients against the fakes.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

import pandas as pd
import sqlalchemy as sa

from adperf import warehouse
from adperf.errors import AdperfError, ConfigError

log = logging.getLogger(__name__)

ACTIONABLE = ("scale", "pause", "unscale", "expand")
BUDGET_ACTIONS = ("scale", "unscale")
PAUSED = "PAUSED"
STATUS = "status"
COPIES = "copies"  # action_log.field of an expand; value_after is the copy's id
# Outcomes of a planned change, and of an applied one.
CHANGE, NO_CHANGE, SKIP, FAILED, APPLIED = "change", "no change", "skip", "failed", "applied"
PENDING = "pending"
# Currencies whose smallest unit is the whole unit (Facebook's "offset" 1:
# https://developers.facebook.com/docs/marketing-api/currencies).
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"CLP", "COP", "CRC", "HUF", "ISK", "IDR", "JPY", "KRW", "PYG", "TWD", "VND"}
)


@dataclass(frozen=True)
class Settings:
    """How a scale changes a budget."""

    scale_factor: float = 1.2
    max_budget_increase: float = 0.5  # a scale never raises a budget by more than this share
    expand: bool = False  # make the `expand` copies (opt-in); else they are shown and skipped
    expand_active: bool = False  # copies start ACTIVE (default PAUSED, for a person to start)

    def check(self) -> None:
        """ConfigError unless 1 < scale_factor <= 1 + max_budget_increase."""
        if not (math.isfinite(self.scale_factor) and self.scale_factor > 1.0):
            raise ConfigError(
                f"actions: scale_factor {self.scale_factor} does not raise a budget. "
                "Fix: set [actions] scale_factor above 1, e.g. 1.2"
            )
        if self.scale_factor > 1.0 + self.max_budget_increase + 1e-12:
            raise ConfigError(
                f"actions: scale_factor {self.scale_factor} raises budgets by more than "
                f"[actions] max_budget_increase ({self.max_budget_increase:.0%}). Fix: lower "
                "scale_factor, or raise max_budget_increase if that is really meant"
            )


@dataclass(frozen=True)
class Recommendation:
    """One scale / pause row of `actions`."""

    platform: str
    level: str
    object_id: str
    object_name: str | None
    action: str
    reason: str
    parent_id: str | None = None


@dataclass(frozen=True)
class Target:
    """An object a recommendation changes, as the platform has it now (or why it cannot)."""

    platform: str
    level: str
    object_id: str
    object_name: str | None
    action: str
    source: Recommendation
    status: str | None = None
    budget: int | None = None  # in `unit`
    budget_field: str = ""  # 'daily_budget' (Facebook) or 'amount_micros' (Google Ads)
    currency: str = ""
    per_currency_unit: int = 1  # budget units per unit of currency (100 for cents, 1e6 micros)
    budget_step: int = 1  # budgets are multiples of this
    refs: Mapping[str, str] | None = None  # platform handles (resource names, customer id)
    skip: str | None = None
    error: str | None = None

    @classmethod
    def unchanged(
        cls,
        rec: Recommendation,
        budget_field: str,
        *,
        skip: str | None = None,
        error: str | None = None,
    ) -> Target:
        """The recommendation's own object, not read as it is now: skipped (`skip` says why)
        or unreadable (`error`)."""
        return cls(
            platform=rec.platform,
            level=rec.level,
            object_id=rec.object_id,
            object_name=rec.object_name,
            action=rec.action,
            source=rec,
            budget_field=budget_field,
            skip=skip,
            error=error,
        )

    @property
    def unit(self) -> str:
        if self.per_currency_unit == 1_000_000:
            return f"micros {self.currency}"
        return f"1/{self.per_currency_unit} {self.currency}"


@dataclass(frozen=True)
class Change:
    """What applying one target does: field, before, after, and the outcome."""

    target: Target
    field: str
    before: str | None
    after: str | None
    outcome: str
    note: str = ""


class Platform(Protocol):
    """An ad platform's reads and writes (the real SDK clients, production or sandbox)."""

    name: str

    def targets(self, recommendations: Sequence[Recommendation]) -> list[Target]:
        """The objects these recommendations change, with their current state."""
        ...

    def apply(self, change: Change) -> str | None:
        """Make one change; raise an AdperfError (naming object, day and fix) on failure.

        Returns the value made when only the platform knows it (an expand's copy id)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def read_recommendations(
    engine: sa.Engine, day: str, platforms: Iterable[str] | None = None
) -> list[Recommendation]:
    """The day's scale / pause rows of `actions` (of some platforms), in table order."""
    frame = warehouse.read_days(engine, "actions", day, day)
    frame = frame[frame["action"].isin(ACTIONABLE)]
    if platforms is not None:
        frame = frame[frame["platform"].isin(list(platforms))]
    out = []
    for row in frame.to_dict("records"):
        out.append(
            Recommendation(
                platform=str(row["platform"]),
                level=str(row["level"]),
                object_id=str(row["object_id"]),
                object_name=None if pd.isna(row["object_name"]) else str(row["object_name"]),
                action=str(row["action"]),
                reason=str(row["reason"]),
                parent_id=None if pd.isna(row["parent_id"]) else str(row["parent_id"]),
            )
        )
    return out


def assign_to_adsets(
    recommendations: Sequence[Recommendation], campaign_adsets: Mapping[str, Sequence[str]]
) -> list[tuple[Recommendation, str]]:
    """(recommendation, adset id) pairs: each adset's own scale / pause, else its campaign's."""
    own = {r.object_id: r for r in recommendations if r.level == "adset"}
    pairs = [(r, r.object_id) for r in own.values()]
    for rec in recommendations:
        if rec.level != "campaign":
            continue
        for adset_id in campaign_adsets.get(rec.object_id, ()):
            if adset_id not in own:
                pairs.append((rec, adset_id))
    return pairs


def logged_changes(engine: sa.Engine, day: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The last pending / applied action_log row per (platform, object_id, field) of the day."""
    t = warehouse.action_log
    if not sa.inspect(engine).has_table(t.name):
        return {}
    query = (
        sa.select(t)
        .where(t.c.date == dt.date.fromisoformat(day), t.c.status.in_([PENDING, APPLIED]))
        .order_by(t.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return {(r["platform"], r["object_id"], r["field"]): dict(r) for r in rows}


def plan_changes(
    targets: Sequence[Target],
    settings: Settings,
    logged: Mapping[tuple[str, str, str], Mapping[str, Any]],
) -> list[Change]:
    """What each target's action changes, given its current state and the day's action_log."""
    return [_decide(t, settings, logged) for t in targets]


def _decide(
    t: Target, settings: Settings, logged: Mapping[tuple[str, str, str], Mapping[str, Any]]
) -> Change:
    field = STATUS if t.action == "pause" else COPIES if t.action == "expand" else t.budget_field
    if t.error is not None:
        return Change(t, field, None, None, FAILED, t.error)
    if t.skip is not None:
        return Change(t, field, None, None, SKIP, t.skip)
    if t.action == "pause":
        if t.status == PAUSED:
            return Change(t, field, t.status, t.status, NO_CHANGE, "already paused")
        return Change(t, field, t.status, PAUSED, CHANGE)
    if t.action == "expand" and not settings.expand:
        return Change(
            t, field, None, None, SKIP, "expand is opt-in: add --expand to copy the adset"
        )
    earlier = logged.get((t.platform, t.object_id, field))
    if earlier is not None:
        when = f"{earlier['applied_at']:%Y-%m-%d %H:%M} UTC by {earlier['applied_by']}"
        if earlier["status"] == PENDING:
            return Change(
                t,
                field,
                str(t.budget),
                None,
                FAILED,
                f"an earlier apply ({when}) stopped during this change, so it may or may not "
                f"have been made; check the budget on the platform, then set that action_log "
                f"row (id {earlier['id']}) to status 'applied', or to status 'failed' and "
                "claim NULL",
            )
        done = {"expand": "copied", "unscale": "scaled back"}.get(t.action, "scaled")
        if earlier["action"] != t.action:
            done = f"{earlier['action']} applied"
        return Change(
            t,
            field,
            earlier["value_before"],
            earlier["value_after"],
            NO_CHANGE,
            f"already {done} for this day ({when})",
        )
    if t.status is not None and t.status not in ("ACTIVE", "ENABLED"):
        return Change(t, field, None, None, SKIP, f"is {t.status}: a stopped object is not scaled")
    if t.action == "expand":
        return Change(
            t, field, None, "PAUSED copy" if not settings.expand_active else "copy", CHANGE
        )
    if t.budget is None or t.budget <= 0:
        return Change(t, field, None, None, SKIP, "has no daily budget of its own")
    if t.action == "unscale":
        after = unscaled_budget(t.budget, settings, t.budget_step)
        if after >= t.budget:
            return Change(t, field, str(t.budget), str(t.budget), NO_CHANGE, "budget too small")
        return Change(t, field, str(t.budget), str(after), CHANGE)
    after = scaled_budget(t.budget, settings, t.budget_step)
    if after <= t.budget:
        return Change(t, field, str(t.budget), str(t.budget), NO_CHANGE, "budget too small")
    return Change(t, field, str(t.budget), str(after), CHANGE)


def scaled_budget(before: int, settings: Settings, step: int = 1) -> int:
    """`before` x scale_factor, to the nearest multiple of `step`, never above the cap."""
    exact = Decimal(before) * Decimal(repr(settings.scale_factor))
    steps = (exact / step).to_integral_value(rounding=ROUND_HALF_UP)
    cap = int(Decimal(before) * (1 + Decimal(repr(settings.max_budget_increase))))
    return min(int(steps) * step, cap // step * step)


def unscaled_budget(before: int, settings: Settings, step: int = 1) -> int:
    """`before` / scale_factor (a scale undone), to the nearest multiple of `step`, at least one
    step."""
    exact = Decimal(before) / Decimal(repr(settings.scale_factor))
    steps = (exact / step).to_integral_value(rounding=ROUND_HALF_UP)
    return max(int(steps), 1) * step


def apply_changes(
    engine: sa.Engine,
    day: str,
    changes: Sequence[Change],
    platforms: Mapping[str, Platform],
    applied_by: str,
    now: Callable[[], dt.datetime] | None = None,
) -> list[Change]:
    """Make every `change` change; one action_log row each. A failure does not stop the others.

    Returns the changes with outcome `applied` or `failed` (note: the error) in place of
    `change`; the others as they were.
    """
    t = warehouse.action_log
    warehouse.create_action_log(engine)
    clock = now or (lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
    out: list[Change] = []
    for change in changes:
        if change.outcome != CHANGE:
            out.append(change)
            continue
        target = change.target
        src = target.source
        via = (src.level, src.object_id) if src.object_id != target.object_id else (None, None)
        row = {
            "date": dt.date.fromisoformat(day),
            "platform": target.platform,
            "level": target.level,
            "object_id": target.object_id,
            "object_name": (target.object_name or "")[:255] or None,
            "action": target.action,
            "field": change.field,
            "value_before": change.before,
            "value_after": change.after,
            "unit": None if change.field in (STATUS, COPIES) else target.unit,
            "applied_at": clock(),
            "applied_by": applied_by[:64],
            "status": PENDING,
            "source_level": via[0],
            "source_id": via[1],
            # A scale moves the budget from the value read, so it must happen once: its row
            # claims the object (unique key, committed before the API call). A pause sets an
            # absolute state checked on the object itself, so two at once do no harm.
            "claim": None if change.field == STATUS else 1,
        }
        try:
            with engine.begin() as conn:
                key = conn.execute(t.insert().values(**row)).inserted_primary_key
        except sa.exc.IntegrityError:
            out.append(_claimed(engine, day, change))
            continue
        assert key is not None
        log_id = key[0]
        error: str | None = None
        made: str | None = None
        try:
            made = platforms[target.platform].apply(change)
        except AdperfError as exc:
            status, error = FAILED, str(exc)
            result = replace(change, outcome=FAILED, note=error)
        else:
            status, result = APPLIED, replace(change, outcome=APPLIED)
            if made is not None:  # an expand's copy id: only the platform knows it
                result = replace(result, after=made)
        with engine.begin() as conn:
            conn.execute(
                t.update()
                .where(t.c.id == log_id)
                .values(
                    status=status,
                    error=error and error[:1024],
                    value_after=result.after,
                    applied_at=clock(),
                    # A failure releases the claim: the next apply may try again.
                    claim=None if status == FAILED else row["claim"],
                )
            )
        out.append(result)
    return out


def _claimed(engine: sa.Engine, day: str, change: Change) -> Change:
    """`change` skipped because another apply holds its claim (or FAILED if none does now)."""
    t, target = warehouse.action_log, change.target
    query = sa.select(t.c.applied_by, t.c.applied_at, t.c.status).where(
        t.c.date == dt.date.fromisoformat(day),
        t.c.platform == target.platform,
        t.c.object_id == target.object_id,
        t.c.field == change.field,
        t.c.claim.is_not(None),
    )
    with engine.connect() as conn:
        holder = conn.execute(query).first()
    if holder is None:  # released (failed) between our insert and this read
        note = "another apply held this object and has failed since; nothing was changed"
        log.warning(
            "actions %s %s %s for %s: %s",
            target.platform,
            target.level,
            target.object_id,
            day,
            note,
        )
        return replace(change, outcome=FAILED, note=note + ". Fix: run the apply again")
    when = f"{holder.applied_at:%Y-%m-%d %H:%M:%S}"
    note = f"claimed by another apply (by {holder.applied_by} at {when} UTC, {holder.status})"
    log.warning(
        "actions %s %s %s for %s: %s", target.platform, target.level, target.object_id, day, note
    )
    return replace(change, outcome=SKIP, note=note)


def run_day(
    engine: sa.Engine,
    day: str,
    platforms: Mapping[str, Platform],
    settings: Settings,
    *,
    yes: bool,
    applied_by: str,
) -> list[Change]:
    """Plan the day's scale / pause actions on these platforms; with `yes`, apply them."""
    settings.check()
    recs = read_recommendations(engine, day, list(platforms))
    targets = [t for client in platforms.values() for t in client.targets(recs)]
    changes = plan_changes(targets, settings, logged_changes(engine, day))
    for change in changes:
        if change.outcome == FAILED:
            # Read (or planning) failures never reach action_log; the note is the platform
            # client's message, which names object, day and fix and never holds the token.
            t = change.target
            log.warning(
                "actions %s %s %s for %s: %s", t.platform, t.level, t.object_id, day, change.note
            )
    return apply_changes(engine, day, changes, platforms, applied_by) if yes else changes


def render(day: str, changes: Sequence[Change], *, dry_run: bool) -> str:
    """The changes as a table a person reads before saying --yes."""
    head = f"adperf actions for {day}" + (
        " (dry run: nothing changed; add --yes to apply)" if dry_run else ""
    )
    if not changes:
        return f"{head}\nno scale, pause, scale back or expand actions to apply"
    rows = [("platform", "level", "object", "action", "change", "outcome")]
    for c in changes:
        t = c.target
        name = f"{t.object_name} ({t.object_id})" if t.object_name else t.object_id
        if t.source.object_id != t.object_id:
            name += f" via {t.source.level} {t.source.object_id}"
        outcome = "will change" if dry_run and c.outcome == CHANGE else c.outcome
        if c.note:
            outcome += f": {c.note}"
        rows.append((t.platform, t.level, name, t.action, _shown(c), outcome))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [head, ""]
    for i, r in enumerate(rows):
        cells = [v.ljust(w) for v, w in zip(r[:5], widths, strict=True)]
        lines.append("  ".join([*cells, r[5]]))
        if i == 0:
            lines.append("-" * (sum(widths) + 2 * 5 + len(r[5])))
    counts: dict[str, int] = {}
    for c in changes:
        key = "will change" if dry_run and c.outcome == CHANGE else c.outcome
        counts[key] = counts.get(key, 0) + 1
    lines += ["", ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))]
    return "\n".join(lines)


def _shown(c: Change) -> str:
    if c.before is None and c.after is None:
        return "-"
    if c.field == STATUS:
        return f"status {c.before} -> {c.after}"
    if c.field == COPIES:
        return f"copy adset -> {c.after or '?'}"
    return f"budget {_money(c.before, c.target)} -> {_money(c.after, c.target)}"


def _money(value: str | None, t: Target) -> str:
    if value is None:
        return "?"
    amount = Decimal(int(value)) / Decimal(t.per_currency_unit)
    digits = 0 if t.currency in ZERO_DECIMAL_CURRENCIES else 2
    return f"{amount:,.{digits}f} {t.currency}".strip()
