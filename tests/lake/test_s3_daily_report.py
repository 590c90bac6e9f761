"""The whole DailyReport of the tiny world with `data_root = s3://…` on a real S3 server gives
the warehouse rows (and lake bytes) of a run on a local folder, and no credential in any log."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf import lake
from adperf.files import LocalFiles, S3Files, slack_marker
from adperf.objstore import MANIFEST_FILE

from ..faults.harness import END, assert_same_warehouse, build, configure, planted_env
from ..faults.harness import warehouse_rows as read_warehouse
from .conftest import ACCESS_KEY, REGION, SECRET_KEY, S3Server


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {record.levelname} {text}")


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adperf.sandbox.world import ensure_world

    root = tmp_path_factory.mktemp("s3world") / "world"
    ensure_world(root, end=END, profile="tiny", seed=7, report_timezone="Asia/Seoul")
    return root


def _run(root: Path, world: Path, s3: dict[str, str] | None) -> list[str]:
    """DailyReport of END in `root` (its lake in S3 when `s3` is given); every log line."""
    shutil.copytree(world, root / "world")
    handler = _Collect()
    loggers = [logging.getLogger(n) for n in ("", "luigi", "luigi-interface")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        configure(root)
        if s3 is not None:
            cfg = luigi.configuration.get_config()
            cfg.set("adperf", "data_root", s3["url"])
            cfg.set("adperf", "files_root", str(root / "files"))
            cfg.set("s3", "endpoint_url", s3["endpoint"])
            cfg.set("s3", "region", REGION)
        with planted_env():
            # Two worker processes on S3: each forked worker makes its own S3 client.
            result = build(workers=2 if s3 is not None else 1)
        assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
        cfg = luigi.configuration.get_config()
        for section, key in (("adperf", "files_root"), ("s3", "endpoint_url"), ("s3", "region")):
            cfg.remove_option(section, key)
        Register.clear_instance_cache()
    return handler.lines


@pytest.fixture()
def s3_run(
    tmp_path: Path, tiny_world: Path, s3_server: S3Server, s3_env: dict[str, str], s3_prefix: str
) -> Iterator[tuple[Path, list[str], str]]:
    url = s3_server.url(s3_prefix)
    lines = _run(tmp_path / "s3", tiny_world, {"url": url, "endpoint": s3_server.endpoint})
    yield tmp_path / "s3", lines, s3_prefix


# A world build and two whole DailyReports (~1.5 min on an idle 2-core machine): more than the
# default 300 s when the machine is shared.
@pytest.mark.timeout(900)
def test_daily_report_on_s3_equals_the_local_run(
    tmp_path: Path, tiny_world: Path, s3_server: S3Server, s3_run: tuple[Path, list[str], str]
) -> None:
    s3_root, lines, prefix = s3_run
    _run(tmp_path / "local", tiny_world, None)
    local = tmp_path / "local"
    got = read_warehouse(f"sqlite:///{s3_root / 'warehouse.db'}")
    assert_same_warehouse(got, read_warehouse(f"sqlite:///{local / 'warehouse.db'}"))

    # Every partition of the local lake is in the bucket with the same bytes, committed by a
    # manifest; nothing of the lake was written as a local folder beside the S3 run.
    store = s3_server.connect(prefix)
    parts = sorted(p.parent.relative_to(local / "lake") for p in local.rglob(lake.DATA_FILE))
    parts = [p for p in parts if not any(s.startswith(lake.TMP_PREFIX) for s in p.parts)]
    assert len(parts) > 20
    for part in parts:
        dataset, (key, value) = str(part.parent), part.name.split("=", 1)
        want = (local / "lake" / part / lake.DATA_FILE).read_bytes()
        assert lake.read_file(store, dataset, key, value, lake.DATA_FILE) == want, part
    listing = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.location.bucket, Prefix=store.location.key("")
    )
    keys = [o["Key"] for page in listing for o in page.get("Contents", [])]
    report = f"reports/date={END.isoformat()}"
    assert [k for k in keys if k.endswith("/" + MANIFEST_FILE)] != []
    manifests = {k.removeprefix(f"{prefix}/") for k in keys if k.endswith("/" + MANIFEST_FILE)}
    assert manifests == {f"{p}/{MANIFEST_FILE}" for p in parts} | {f"{report}/{MANIFEST_FILE}"}
    assert not (s3_root / "lake").exists()
    # The files every worker host must see (report page, dashboard, Slack post marker) are in
    # the bucket too, with the bytes of the local run's files_root; none stayed in files_root.
    files, local_files = S3Files(store), LocalFiles(local / "lake")
    version, local_version = files.folder(report), local_files.folder(report)
    assert version is not None and local_version is not None
    assert version.meta == local_version.meta and sorted(version.files) == sorted(
        local_version.files
    )
    for name in local_version.files:
        assert version.read(name) == local_version.read(name), name
    marker = slack_marker(END.isoformat())
    assert json.loads(files.read(marker) or b"{}")["content_hash"] == version.meta["content_hash"]
    assert local_files.read(marker) is not None
    leftovers = (
        {p.name for p in (s3_root / "files").iterdir()} if (s3_root / "files").exists() else set()
    )
    assert not leftovers & {"reports", "slack_posts"}, leftovers
    # adperf's summary names them where people open them: the bucket's stable-key copies.
    from tasks.cli import _report_lines

    summary = _report_lines(END, SimpleNamespace(shared_files=lambda: files))
    for name in ("report.html", "dashboard.html"):
        assert f"{prefix}/{report}/{name}" in keys
        assert f"s3://{store.location.bucket}/{prefix}/{report}/{name}" in "\n".join(summary)
    assert any("(outbox: set ADPERF_SLACK_TOKEN" in line for line in summary), summary

    # The credentials reach no log line of the run (luigi's and adperf's, at DEBUG).
    assert len(lines) > 100
    text = "\n".join(lines)
    assert ACCESS_KEY not in text and SECRET_KEY not in text
