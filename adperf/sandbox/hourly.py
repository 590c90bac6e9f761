"""The sandbox world's delivery by hour: each day's row of an ad split over the account's hours.

The world simulates delivery per ad and day of the ad account's calendar (`ad_daily.parquet`);
its hours are a fixed diurnal curve (mobile traffic: quiet at night, peaking in the evening), in
the account's wall-clock time. A day of 23 or 25 hours (a DST change) has as many hours: the
repeated hour gets its share twice, and the platforms report it as one row (`by_wall_hour`).
Counts are split exactly (largest remainder), so the hours always add up to the day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from zoneinfo import ZoneInfo

# Relative delivery by local wall hour 0..23.
DIURNAL = (
    2.0, 1.3, 0.9, 0.7, 0.6, 0.7, 1.0, 1.6, 2.4, 3.0, 3.3, 3.5,
    3.7, 3.7, 3.6, 3.6, 3.8, 4.1, 4.6, 5.1, 5.4, 5.2, 4.2, 3.0,
)  # fmt: skip


def instants(day: str, zone: str) -> list[tuple[dt.datetime, int]]:
    """Every hour of the local day `day` in `zone`: (UTC start, local wall hour)."""
    z = ZoneInfo(zone)
    date = dt.date.fromisoformat(day)
    start = dt.datetime.combine(date, dt.time(), tzinfo=z).astimezone(dt.UTC)
    end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=z).astimezone(dt.UTC)
    out = []
    t = start
    while t < end:
        out.append((t, t.astimezone(z).hour))
        t += dt.timedelta(hours=1)
    return out


def split(total: int, weights: list[float]) -> list[int]:
    """`total` split in proportion to `weights`, in whole units that add up to `total`."""
    if not weights:
        return []
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    parts = [int(x) for x in exact]
    rest = total - sum(parts)
    # Largest remainders first; ties to the earlier hour, so the split is reproducible.
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:rest]:
        parts[i] += 1
    return parts


def by_instant(
    day: str, zone: str, counts: Mapping[str, int]
) -> list[tuple[dt.datetime, int, dict[str, int]]]:
    """The day's `counts` (whole units) per hour: (UTC start, wall hour, counts)."""
    hours = instants(day, zone)
    weights = [DIURNAL[h] for _, h in hours]
    shares = {k: split(int(v), weights) for k, v in counts.items()}
    return [(t, h, {k: shares[k][i] for k in counts}) for i, (t, h) in enumerate(hours)]


def by_wall_hour(
    day: str, zone: str, counts: Mapping[str, int]
) -> list[tuple[int, dict[str, int]]]:
    """The day's `counts` per local wall hour as a platform reports them (the repeated hour
    of a DST change in one row; the skipped one absent)."""
    out: dict[int, dict[str, int]] = {}
    for _, hour, values in by_instant(day, zone, counts):
        have = out.setdefault(hour, dict.fromkeys(counts, 0))
        for k, v in values.items():
            have[k] += v
    return sorted(out.items())


def minor_units(amount: str) -> tuple[int, int]:
    """A decimal string as (whole units of its last digit, digits after the point)."""
    value = Decimal(amount)
    exponent = value.as_tuple().exponent
    digits = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return int(value.scaleb(digits)), digits


def amount(units: int, digits: int) -> str:
    """`minor_units`' inverse: 12345, 2 -> '123.45'."""
    return format(Decimal(units).scaleb(-digits), "f")
