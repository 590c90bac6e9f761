"""Derived datasets are declared once (adperf.schema): the transforms' columns, the check when
written and the warehouse tables all come from that declaration."""

import pandas as pd
import pytest
import sqlalchemy as sa

from adperf import warehouse
from adperf.errors import SchemaError
from adperf.schema import (
    COHORT_ROAS,
    COHORT_ROAS_SEGMENTS,
    DERIVED,
    RECONCILIATION,
    Dataset,
    field_hints,
    to_table,
)
from adperf.transform import cohort


@pytest.mark.parametrize("dataset", list(DERIVED.values()), ids=list(DERIVED))
def test_the_warehouse_table_is_the_declaration(dataset: Dataset) -> None:
    table = warehouse.metadata.tables[dataset.table or dataset.name]
    fields = list(dataset.schema)
    assert {c.name for c in table.columns} == {f.name.removesuffix("_micros") for f in fields}
    keys = [f.name for f in fields if field_hints(f).get("key") == "1"]
    assert [c.name for c in table.primary_key.columns] == keys
    for f in fields:
        col = table.c[f.name.removesuffix("_micros")]
        assert col.nullable == f.nullable, f.name
        if f.name.endswith("_micros"):
            assert isinstance(col.type, sa.Numeric) and col.type.scale == 6


def test_declared_tables_keep_their_contract_names() -> None:
    assert {d.table or d.name for d in DERIVED.values()} == {
        "campaign_daily", "cohort_roas", "cohort_roas_segments", "actions",
        "revenue_reconciliation", "source_discrepancy", "action_outcomes",
    }  # fmt: skip
    assert warehouse.revenue_reconciliation.c.restricted.nullable  # older days have none
    assert not RECONCILIATION.schema.field("total_payments_micros").nullable


def test_cohort_key_and_types() -> None:
    table = warehouse.cohort_roas_segments
    assert [c.name for c in table.primary_key.columns] == [
        "cohort_date", "platform", "campaign_id", "country", "device_os", "age_days",
    ]  # fmt: skip
    assert isinstance(table.c.cohort_date.type, sa.Date)
    assert isinstance(table.c.age_days.type, sa.Integer)
    assert not isinstance(table.c.age_days.type, sa.BigInteger)
    assert table.c.device_os.type.length == 32  # type: ignore[attr-defined]
    assert any(i.columns.keys() == ["as_of"] for i in table.indexes)


def test_the_transform_writes_the_declared_columns() -> None:
    assert cohort.COHORT_COLUMNS == COHORT_ROAS.columns
    assert cohort.SEGMENT_COHORT_COLUMNS == COHORT_ROAS_SEGMENTS.columns
    assert COHORT_ROAS_SEGMENTS.columns[3:5] == cohort.SEGMENT_COLUMNS


def test_a_cohort_frame_is_checked_when_written() -> None:
    row = {
        "cohort_date": "2026-11-01", "platform": "tiktok", "campaign_id": "c1",
        "campaign_name": None, "age_days": 0, "users": 3, "installs": 3, "payers": 1,
        "revenue_micros": 1_500_000, "spend_micros": 0, "roas": None, "as_of": "2026-11-01",
    }  # fmt: skip
    table = to_table(pd.DataFrame([row]), COHORT_ROAS)
    assert table.column("roas").null_count == 1 and table.num_rows == 1
    with pytest.raises(SchemaError, match="users has 1 nulls"):
        to_table(pd.DataFrame([{**row, "users": None}]), COHORT_ROAS)
    with pytest.raises(SchemaError, match="unexpected columns"):
        to_table(pd.DataFrame([{**row, "revenue": 1.5}]), COHORT_ROAS)


def test_the_ltv_frames_are_declared_and_checked_when_written() -> None:
    """pltv, pltv_window and pltv_draws (lake only) take their columns from adperf.schema."""
    from adperf.schema import PLTV, PLTV_DRAWS, PLTV_WINDOW
    from adperf.transform.ltv.value import _empty_pltv
    from adperf.transform.ltv.window import _empty_draws, _empty_window

    for frame, dataset in ((_empty_pltv(), PLTV), (_empty_window(), PLTV_WINDOW),
                           (_empty_draws(), PLTV_DRAWS)):  # fmt: skip
        assert to_table(frame, dataset, allow_empty=True).schema == dataset.schema
    row = {c: 1 for c in PLTV.columns} | {"date": "2026-12-06", "level": "campaign"}
    row |= {"platform": "tiktok", "campaign_id": None, "adset_id": None}
    with pytest.raises(SchemaError, match="column campaign_id has 1 nulls"):
        to_table(pd.DataFrame([row]), PLTV)
    assert to_table(pd.DataFrame([row | {"campaign_id": "1"}]), PLTV).num_rows == 1
