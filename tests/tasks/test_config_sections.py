"""A config section's instance is kept while its source is unchanged, and read again when the
file's values, the command line or luigi's instance cache change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from tasks import config


@pytest.fixture()
def cfg(tmp_path: Path) -> Iterator[luigi.configuration.LuigiConfigParser]:
    conf = luigi.configuration.get_config()
    saved = {s: dict(conf.items(s, raw=True)) for s in ("adperf", "slack") if conf.has_section(s)}
    conf.set("adperf", "data_root", str(tmp_path / "lake"))
    Register.clear_instance_cache()
    yield conf
    for section in ("adperf", "slack"):
        conf.remove_section(section)
        conf.add_section(section)
        for key, value in saved.get(section, {}).items():
            conf.set(section, key, value)
    Register.clear_instance_cache()


def test_a_section_is_kept_until_its_values_change(
    cfg: luigi.configuration.LuigiConfigParser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = config.adperf()
    assert config.adperf() is first and first.data_root == str(tmp_path / "lake")
    assert config.slack() is not first  # kept per section

    cfg.set("adperf", "data_root", str(tmp_path / "other"))
    assert config.adperf().data_root == str(tmp_path / "other")
    cfg.set("adperf", "data_root", str(tmp_path / "lake"))
    again = config.adperf()
    assert again.data_root == str(tmp_path / "lake")

    Register.clear_instance_cache()  # what tests do after configuring: fresh instances
    assert config.adperf() is not again

    # The command line of a luigi run overrides the file.
    with CmdlineParser.global_instance(["Task", "--adperf-data-root", str(tmp_path / "cli")]):
        assert config.adperf().data_root == str(tmp_path / "cli")
    assert config.adperf().data_root == str(tmp_path / "lake")

    # ${ENV} values follow the environment: such a section is read each time.
    cfg.set("adperf", "data_root", "${ADPERF_TEST_LAKE}")
    monkeypatch.setenv("ADPERF_TEST_LAKE", str(tmp_path / "env1"))
    assert config.adperf().data_root == str(tmp_path / "env1")
    monkeypatch.setenv("ADPERF_TEST_LAKE", str(tmp_path / "env2"))
    assert config.adperf().data_root == str(tmp_path / "env2")
