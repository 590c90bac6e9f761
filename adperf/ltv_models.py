"""The LTV models stored in the lake (`ltv_model/date=D`): the warm start of a day's fit and the
model a backtest reuses, read back instead of fitted again."""

from __future__ import annotations

import datetime as dt
from typing import Any

from adperf import lake
from adperf.lake import Root

#: Days before a report day searched for a usable model (a warm start, not a dependency).
PREVIOUS_DAYS = 7


def previous_ltv_model(root: Root, day: dt.date) -> tuple[str | None, Any]:
    """(model_date, model) of the newest usable ltv_model partition of the 7 days before `day`.

    Read if present, not required: a dependency on Ltv(day - 1) would chain every report day
    back to the first one (a long graph, backfills forced into sequence), while the previous
    model is only a warm start and the fallback when today's fit does not converge.
    """
    for back in range(1, PREVIOUS_DAYS + 1):
        found = _model_of(root, (day - dt.timedelta(days=back)).isoformat())
        if found is not None:
            return found
    return None, None


def stored_ltv_model(root: Root, day: dt.date) -> Any:
    """The model fitted as of `day` from its ltv_model partition, or None (absent, or that day
    fell back to an older model): the backtest's model, reused instead of fitted again."""
    iso = day.isoformat()
    found = _model_of(root, iso)
    return found[1] if found is not None and found[0] == iso else None


def _model_of(root: Root, day: str) -> tuple[str, Any] | None:
    """(model_date, model) of the day's ltv_model row, or None (no partition, no usable model)."""
    from adperf.transform.ltv import model_from_row

    if not lake.partition_exists(root, "ltv_model", "date", day):
        return None
    rows = lake.read_partition(root, "ltv_model", "date", day).to_dict("records")
    return model_from_row({str(k): v for k, v in rows[0].items()}) if rows else None
