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


def test_accounts_line_is_none_without_the_days_spend(tmp_path: Path) -> None:
    day = dt.date.fromisoformat(DAY)
    assert inputs.accounts_line(tmp_path, day, "Asia/Seoul", "account") is None
