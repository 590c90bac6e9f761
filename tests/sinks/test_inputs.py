"""adperf.sinks.inputs: what a day's report is made of, read from a lake in tmp_path."""

import datetime as dt
from pathlib import Path

import pandas as pd

from adperf import lake
from adperf.sinks import inputs

DAY = "2026-11-27"


def _write(
    root: Path, dataset: str, df: pd.DataFrame, meta: dict[str, object] | None = None
) -> None:
    lake.write_frame(root, dataset, "date", DAY, df, meta=meta)


def test_inputs_hash_waits_for_every_input_and_follows_their_bytes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1]})
    for dataset in inputs.REPORT_INPUTS[:-1]:
        _write(tmp_path, dataset, frame)
    assert inputs.inputs_hash(tmp_path, DAY) is None  # action_outcomes missing
    _write(tmp_path, inputs.REPORT_INPUTS[-1], frame)
    first = inputs.inputs_hash(tmp_path, DAY)
    assert first is not None and first == inputs.inputs_hash(tmp_path, DAY)
    _write(tmp_path, "payments", frame, meta={"quarantined": 2})  # its notes are an input
    noted = inputs.inputs_hash(tmp_path, DAY)
    assert noted not in (None, first)
    _write(tmp_path, "campaign_report", pd.DataFrame({"x": [2]}))  # a restated report
    assert inputs.inputs_hash(tmp_path, DAY) not in (None, first, noted)


def test_as_money_and_first_row() -> None:
    df = pd.DataFrame({"spend_micros": [1_234_567], "roas": [0.5], "platform": ["tiktok"]})
    money = inputs.as_money(df)
    assert list(money.columns) == ["roas", "platform", "spend"]
    assert inputs.first_row(money) == {"roas": 0.5, "platform": "tiktok", "spend": 1.234567}


def test_as_money_converts_every_micros_column_in_order_and_leaves_its_input() -> None:
    df = pd.DataFrame(
        {
            "pltv_micros": [2_000_000, 500_000],
            "date": ["2026-11-27", "2026-11-27"],
            "spend_micros": [1_000_000, 0],
            "spend": ["old", "old"],  # an existing column of the name: replaced in place
        }
    )

    money = inputs.as_money(df)

    assert list(money.columns) == ["date", "spend", "pltv"]
    assert money["pltv"].tolist() == [2.0, 0.5] and money["spend"].tolist() == [1.0, 0.0]
    assert money["spend"].dtype == "float64"
    assert list(df.columns) == ["pltv_micros", "date", "spend_micros", "spend"]


def test_accounts_line_is_none_without_the_days_spend(tmp_path: Path) -> None:
    day = dt.date.fromisoformat(DAY)
    assert inputs.accounts_line(tmp_path, day, "Asia/Seoul", "account") is None
