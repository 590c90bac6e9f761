"""adperf.transform.metrics: the one place ROAS, pROAS and CPI are computed."""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pandas as pd
import pytest

from adperf.transform import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("spend", "installs", "expected"),
    [
        (1_000_001, 2, 500_001),  # 500,000.5 rounds half up
        (999_999, 2, 500_000),  # 499,999.5 rounds half up too
        (10_000_000, 3, 3_333_333),
        (5_000_000, 0, None),
    ],
)
def test_cpi_micros_rounds_half_up_exactly(spend: int, installs: int, expected: int | None) -> None:
    got = metrics.cpi_micros(pd.Series([spend]), pd.Series([installs]))
    assert (None if pd.isna(got.iloc[0]) else int(got.iloc[0])) == expected
    assert metrics.cpi_micros_of(spend, installs) == expected


def test_cpi_micros_exact_beyond_float_precision() -> None:
    spend = 2**60 + 1  # not representable as float64
    got = metrics.cpi_micros(pd.Series([spend]), pd.Series([1]))
    assert int(got.iloc[0]) == spend


def test_ratios_are_na_without_spend() -> None:
    out = metrics.roas(pd.Series([30, 10, pd.NA], dtype="Int64"), pd.Series([20, 0, 5]))
    assert out.iloc[0] == pytest.approx(1.5)
    assert pd.isna(out.iloc[1]) and pd.isna(out.iloc[2])
    assert metrics.proas_of(26, 10) == pytest.approx(2.6)
    assert metrics.proas_of(26, 0) is None
    assert metrics.roas_of(None, 10) is None
    assert metrics.cpi_of(10.0, 4.0) == pytest.approx(2.5)
    draws = metrics.proas_draws(np.array([10.0, 30.0]), 20)
    assert draws.tolist() == [0.5, 1.5]


def _denominator_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def test_no_other_module_divides_by_spend_or_installs() -> None:
    """ROAS / pROAS / CPI are computed in metrics only: no `x / spend` or `x / installs`
    elsewhere in adperf/ or tasks/ (the sandbox's truth aside)."""
    names = {"spend", "spend_micros", "installs", "camp_spend"}
    offenders = []
    for folder in ("adperf", "tasks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "metrics.py" or "sandbox" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                    if _denominator_name(node.right) in names:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_check_above_can_fail() -> None:
    tree = ast.parse("x = revenue / spend\ny = rows['spend_micros']\nz = a / rows['installs']")
    divs = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)]
    assert [_denominator_name(n.right) for n in divs] == ["spend", "installs"]
