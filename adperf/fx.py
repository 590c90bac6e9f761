"""FX rates: units of the report currency per unit of a currency, by day; never a silent 1.0."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from adperf.errors import ConfigError, MissingFxRate
from adperf.schema import MICROS


@dataclass(frozen=True)
class FxTable:
    """Daily rates keyed by (day, currency); the report currency is always 1."""

    report_currency: str
    rates: dict[tuple[str, str], Decimal]
    source: str = "[fx] rates_path"

    def rate(self, currency: str, day: str) -> Decimal:
        """Units of the report currency per 1 `currency` on `day`."""
        if currency == self.report_currency:
            return Decimal(1)
        try:
            return self.rates[(day, currency)]
        except KeyError:
            raise MissingFxRate(currency, day, self.source) from None


def load_rates(path: Path, report_currency: str) -> FxTable:
    """Read a `date,currency,rate` CSV into an FxTable (rates kept as exact decimals)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ConfigError(
            f"fx: rates file {path} does not exist. Fix: set [fx] rates_path to a CSV "
            "with columns date,currency,rate"
        ) from None
    missing = {"date", "currency", "rate"} - set(df.columns)
    if missing:
        raise ConfigError(f"fx: {path} lacks columns {sorted(missing)}. Fix: date,currency,rate")
    rates: dict[tuple[str, str], Decimal] = {}
    for line, (day, cur, rate) in enumerate(
        zip(df["date"], df["currency"], df["rate"], strict=True), start=2
    ):
        try:
            value = Decimal(rate)
        except InvalidOperation:
            raise ConfigError(f"fx: {path} line {line}: rate {rate!r} is not a number") from None
        if not value.is_finite() or value <= 0:
            raise ConfigError(f"fx: {path} line {line}: rate {rate!r} must be positive")
        rates[(day.strip(), cur.strip().upper())] = value
    return FxTable(report_currency, rates, str(path))


def decimal_to_micros(value: Decimal | str) -> int:
    """Exact amount → integer micros (half-even below a micro)."""
    d = Decimal(value) * MICROS
    return int(d.to_integral_value(rounding=ROUND_HALF_EVEN))


def convert_micros(
    amounts_micros: pd.Series, currencies: pd.Series, days: pd.Series, fx: FxTable
) -> tuple[np.ndarray, np.ndarray]:
    """Convert amounts to the report currency, exactly per row: (rates as float, micros)."""
    n = len(amounts_micros)
    out = np.zeros(n, dtype=np.int64)
    rates = np.ones(n, dtype=np.float64)
    if n == 0:
        return rates, out
    frame = pd.DataFrame(
        {"a": amounts_micros.to_numpy(), "c": currencies.to_numpy(), "d": days.to_numpy()}
    )
    # One Decimal rate per (day, currency) group; the product per row stays exact integer math:
    # micros * rate with the rate as a fraction p/q, rounded half-even to a micro.
    for group_key, idx in frame.groupby(["d", "c"], sort=False).indices.items():
        day, cur = (str(part) for part in group_key)  # type: ignore[attr-defined]
        rate = fx.rate(cur, day)
        num, den = rate.as_integer_ratio()
        amounts = frame["a"].to_numpy()[idx]
        out[idx] = [_div_half_even(int(a) * num, den) for a in amounts]
        rates[idx] = float(rate)
    return rates, out


def _div_half_even(numerator: int, denominator: int) -> int:
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        q += 1
    return q
