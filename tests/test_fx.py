from decimal import Decimal

import pandas as pd
import pytest

from adperf.errors import MissingFxRate
from adperf.fx import convert_micros, load_rates


def _rates(tmp_path):
    p = tmp_path / "fx.csv"
    p.write_text("date,currency,rate\n2026-11-27,KRW,0.00072463768\n2026-11-28,KRW,0.0007\n")
    return load_rates(p, "USD")


def test_conversion_is_exact_per_row(tmp_path):
    fx = _rates(tmp_path)
    rates, out = convert_micros(
        pd.Series([150_000 * 10**6, 1_990_000, -1_000 * 10**6]),
        pd.Series(["KRW", "USD", "KRW"]),
        pd.Series(["2026-11-27", "2026-11-27", "2026-11-28"]),
        fx,
    )
    # 150,000 won x 0.00072463768 = 108.695652 USD exactly
    assert out.tolist() == [108_695_652, 1_990_000, -700_000]
    assert rates.tolist() == [0.00072463768, 1.0, 0.0007]
    assert fx.rate("KRW", "2026-11-27") == Decimal("0.00072463768")


def test_missing_rate_names_currency_and_day(tmp_path):
    fx = _rates(tmp_path)
    with pytest.raises(MissingFxRate, match="no rate for JPY on 2026-11-27"):
        convert_micros(pd.Series([1]), pd.Series(["JPY"]), pd.Series(["2026-11-27"]), fx)
