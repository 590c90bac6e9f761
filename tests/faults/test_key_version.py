"""A rotated HMAC key: the extracts a run needs are redone under the new key version, and user
pseudonyms of two versions are never joined (they would silently fall into "unattributed")."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf import lake
from adperf.errors import ConfigError
from adperf.pseudonym import KEY_VERSION_META, KeyVersionMismatch
from tasks import config
from tasks.extract import Payments
from tasks.targets import LakePartition
from tasks.transform import Attribution

from .conftest import CleanRun
from .harness import DAY, END, HMAC_KEY, build, configure, copy_run, planted_env

NEW_KEY = "rotated-HMAC-key-2b8e41d07c9a5f36"


@contextlib.contextmanager
def env(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _versions(root: Path) -> dict[str, Any]:
    """pseudonym_key_version of every complete partition that records one."""
    out = {}
    for meta in sorted((root / "lake").rglob(lake.META_FILE)):
        if any(p.startswith(lake.TMP_PREFIX) for p in meta.parts):
            continue
        info = json.loads(meta.read_text())
        if KEY_VERSION_META in info:
            out[str(meta.parent.relative_to(root / "lake"))] = info[KEY_VERSION_META]
    return out


def test_the_clean_run_records_its_key_version(clean: CleanRun) -> None:
    versions = _versions(clean.root)
    families = {name.split("/")[0] for name in versions}
    # Every extract holding pseudonyms, and nothing derived (those hold no user ids).
    assert families == {
        "installs", "installs_monthly", "payments", "payments_monthly", "events", "match_edges"
    }  # fmt: skip
    assert set(versions.values()) == {"1"}  # the planted key, no version set: the default


def test_a_key_rotation_re_extracts_the_inputs_and_never_joins_two_versions(
    tmp_path: Path, clean: CleanRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    derived = (f"attribution/date={DAY}", f"reconciliation/date={DAY}")
    root = copy_run(clean.root, tmp_path, drop=derived)
    configure(root)
    old_pids = set(lake.read_partition(root / "lake", "payments", "date", DAY)["user_pid"])

    from adperf.transform import attribution

    seen: dict[str, set[str]] = {}
    real = attribution.build_attribution

    def spy(day: str, payments: pd.DataFrame, user_map: pd.DataFrame) -> pd.DataFrame:
        seen["payments"], seen["installs"] = set(payments["user_pid"]), set(user_map["user_pid"])
        return real(day, payments, user_map)

    monkeypatch.setattr(attribution, "build_attribution", spy)
    with planted_env(), env(ADPERF_HMAC_KEY=NEW_KEY, ADPERF_HMAC_KEY_VERSION="2"):
        # Written under version 1: not complete for a run under version 2.
        assert not Payments(date=END).complete()
        with pytest.raises(KeyVersionMismatch, match=f"payments/date={DAY} was pseudonymized"):
            Payments(date=END).output().read()
        result = build(Attribution(date=END))
    Register.clear_instance_cache()
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text

    # Every input of the attribution was extracted again under version 2 ...
    inputs = [
        t.output()
        for t in Attribution(date=END).requires()["installs"].requires()  # type: ignore[union-attr]
    ] + [Payments(date=END).output()]
    assert len(inputs) > 12
    versions = _versions(root)
    for target in inputs:
        assert versions[str(target.path.relative_to(root / "lake"))] == "2", target
    # ... so the join saw only new pseudonyms, none of the old key's ...
    assert seen["payments"] and seen["installs"]
    assert not (seen["payments"] | seen["installs"]) & old_pids
    assert seen["payments"] & seen["installs"]  # and they still join
    # ... and found what the clean run found: no payer fell into "unattributed".
    for name in derived:
        got, want = (r / "lake" / name / lake.DATA_FILE for r in (root, clean.root))
        assert got.read_bytes() == want.read_bytes(), name
    # What this run did not need stays as it was (version 1), and neither key is in the lake.
    assert versions[f"events/date={DAY}"] == "1"
    for path in (root / "lake").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert HMAC_KEY.encode() not in data and NEW_KEY.encode() not in data, path


def test_a_reader_of_another_version_gets_the_named_error(clean: CleanRun) -> None:
    configure(clean.root)
    target = LakePartition(clean.root / "lake", "installs", "date", DAY)
    with planted_env():
        assert target.exists() and len(target.read()) > 0
        with env(ADPERF_HMAC_KEY_VERSION="2"):
            assert not target.exists()
            with pytest.raises(KeyVersionMismatch) as err:
                target.read()
    text = str(err.value)
    assert f"installs/date={DAY}" in text and "ADPERF_HMAC_KEY_VERSION=1" in text
    assert HMAC_KEY not in text
    Register.clear_instance_cache()


def test_the_key_version_setting(tmp_path: Path) -> None:
    configure(tmp_path)
    with env(ADPERF_HMAC_KEY=None, ADPERF_HMAC_KEY_VERSION=None):
        assert config.hmac_key_version() == "demo"  # the sandbox's built-in key
        assert config.secrets().hmac_key_version == "demo"
    with env(ADPERF_HMAC_KEY="some-production-key-123", ADPERF_HMAC_KEY_VERSION=None):
        assert config.secrets().hmac_key_version == "1"  # the documented default
    with env(ADPERF_HMAC_KEY="some-production-key-123", ADPERF_HMAC_KEY_VERSION="2026-11"):
        assert config.secrets().hmac_key_version == "2026-11"
    for bad in ("some-production-key-123", "2/3", "x" * 40):
        with env(ADPERF_HMAC_KEY="some-production-key-123", ADPERF_HMAC_KEY_VERSION=bad):
            with pytest.raises(ConfigError, match="ADPERF_HMAC_KEY_VERSION") as err:
                config.secrets()
            assert "some-production-key" not in str(err.value)
    Register.clear_instance_cache()
