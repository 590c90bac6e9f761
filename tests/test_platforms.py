"""One place per ad platform: adperf.platforms is the only module that spells a platform's name
(or its MMP media sources); every list of platforms elsewhere is read from it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from adperf import platforms

ROOT = Path(__file__).resolve().parents[1]


def _own_modules(name: str) -> set[str]:
    """The platform's own modules, which may spell its name: source, action client, fake."""
    fakes = {"facebook": "fake_graph", "google_ads": "fake_google_ads"}
    return {
        f"adperf/sources/{name}.py",
        f"adperf/actions/{name}.py",
        f"adperf/sandbox/{fakes.get(name, f'fake_{name}')}.py",
    }


#: Modules that still spell a platform outside its own files. Empty: keep it so (a new entry
#: needs a reason; shrink it, never grow it).
ALLOWED: dict[str, set[str]] = {}


def _literals(root: Path = ROOT) -> dict[str, set[str]]:
    """Module path -> the platform names / media sources it spells as string literals."""
    words = {p.name: p.name for p in platforms.entries()}
    words |= platforms.media_source_map()  # a media source counts as its platform's name
    found: dict[str, set[str]] = {}
    for package in ("adperf", "tasks"):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == "adperf/platforms.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in words:
                    platform = words[str(node.value)]
                    if rel not in _own_modules(platform):
                        found.setdefault(rel, set()).add(str(node.value))
    return found


def test_no_module_outside_the_registry_spells_a_platform_name() -> None:
    found = _literals()
    assert found == ALLOWED, (
        "spell platforms through adperf.platforms (FACEBOOK, NAMES, media_source_map(), ...), "
        f"not as literals: {found}"
    )


def test_the_scan_finds_a_literal_outside_the_platforms_own_modules(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "adperf" / "sources").mkdir(parents=True)
    (tmp_path / "tasks" / "x.py").write_text('if p == "tiktok" or m == f"Apple Search Ads": pass\n')
    (tmp_path / "adperf" / "sources" / "tiktok.py").write_text('PLATFORM = "tiktok"\n')
    assert _literals(tmp_path) == {"tasks/x.py": {"tiktok", "Apple Search Ads"}}


def test_the_lists_of_platforms_are_the_registry() -> None:
    from adperf.sinks.chart import PLATFORM_COLORS
    from adperf.sources.mmp import DEFAULT_MEDIA_SOURCE_MAP
    from adperf.transform.attribution import PAID_PLATFORMS
    from adperf.vocabulary import OTHER
    from tasks import actions, pipeline

    names = ("facebook", "google_ads", "tiktok", "apple_ads")
    assert platforms.NAMES == names == pipeline.PLATFORMS == actions.PLATFORMS
    assert PAID_PLATFORMS == (*names, OTHER)
    assert DEFAULT_MEDIA_SOURCE_MAP == {
        "Facebook Ads": "facebook",
        "googleadwords_int": "google_ads",
        "bytedanceglobal_int": "tiktok",
        "Apple Search Ads": "apple_ads",
    }
    assert set(PLATFORM_COLORS) == set(names)


def test_every_entry_has_its_config_section_fetch_and_action_client() -> None:
    from tasks import config

    for p in platforms.entries():
        # The declared defaults, not the values of this process's luigi config (tests set
        # their own lookbacks: tests/tasks/conftest.py configure()).
        declared = dict(getattr(config, p.section).get_params())
        assert declared[p.accounts_key]._default == ""  # listed, empty by default
        assert declared["lookback_days"]._default == p.lookback_days
        assert callable(p.load_fetch())
        assert p.load_actions().name == p.name


def test_an_unknown_platform_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown ad platform 'snapchat'; registered: facebook"):
        platforms.get("snapchat")
