"""The dashboard of a real DailyReport run, opened in headless Chromium (Debian's `chromium`).

Under CI=true a missing chromium fails these tests (tests/sinks/browser.py). The screenshot of
the page is kept under var/test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf.sinks.dashboard import TOP_CAMPAIGNS, build_dashboard_data, build_dashboard_html
from tests.sinks.browser import Chromium, chromium_binary
from tests.sinks.test_dashboard import DAY, action_rows, campaign_rows, segment_rows
from tests.tasks.conftest import END, configure, tiny_world  # noqa: F401 - the session's world

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
CHARTS = ["spend", "installs", "cpi", "roas", "proas", "campaigns", "heatmap"]

# Per chart: how many values it draws (non-null y of every trace, or heatmap cells).
POINTS = """
Object.fromEntries(Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => [
  gd.id.replace('chart-', ''),
  gd.data.reduce((n, t) => n + (t.type === 'heatmap' ? t.z.flat() : t.type === 'bar' &&
    t.orientation === 'h' ? t.x : t.y).filter(v => v !== null && v !== undefined).length, 0)
]))
"""
# What the charts draw, to compare before and after a filter.
DRAWN = """
JSON.stringify(Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd =>
  [gd.id, gd.data.map(t => [t.x, t.y, t.z])]))
"""

# The spend the spend chart draws, all platforms and days.
SPEND = """
document.getElementById('chart-spend').data.reduce((n, t) => n + t.y.reduce((a, b) => a + b, 0), 0)
"""


def _choose(browser: Chromium, name: str, index: int) -> str:
    """Pick the index-th option of a filter as a person would (change event); its value."""
    value: str = browser.evaluate(
        f"""(() => {{ const s = document.getElementById('filter-{name}');
        s.selectedIndex = {index}; s.dispatchEvent(new Event('change'));
        return s.value; }})()"""
    )
    return value


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory, tiny_world: Path) -> Iterator[Path]:  # noqa: F811
    chromium_binary()  # fail (CI) or skip before the pipeline run, not after
    root = tmp_path_factory.mktemp("dashboard")
    shutil.copytree(tiny_world, root / "world")
    configure(root)
    from tasks.load import DailyReport

    result = luigi.build([DailyReport(date=END)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    yield root
    Register.clear_instance_cache()


def _page(root: Path) -> Path:
    return root / "lake" / "reports" / f"date={END.isoformat()}" / "dashboard.html"


def test_the_day_has_a_dashboard_linked_from_slack_and_the_report(done: Path) -> None:
    page = _page(done)
    assert page.is_file()
    assert 'href="dashboard.html"' in (page.parent / "report.html").read_text(encoding="utf-8")
    message = json.loads((done / "outbox" / f"slack-{END.isoformat()}.json").read_text())
    lines = [e["text"] for b in message["blocks"] if b["type"] == "context" for e in b["elements"]]
    link = f"reports/date={END.isoformat()}/dashboard.html"
    assert (done / "lake" / link) == page
    text = f":bar_chart: Dashboard (trends, cohort heatmap, filters): `{link}` in the data root"
    assert text in lines


def test_the_dashboard_loads_draws_every_chart_and_filters_in_chromium(done: Path) -> None:
    with Chromium() as browser:
        browser.open(_page(done).as_uri())
        browser.wait_for("document.body.getAttribute('data-drawn') === '1'")
        assert browser.errors() == []
        # Offline: the page itself and images Plotly makes inline, nothing else.
        urls = browser.requested_urls()
        assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls
        points = browser.evaluate(POINTS)
        assert sorted(points) == sorted(CHARTS)
        assert all(n > 0 for n in points.values()), points
        assert points["heatmap"] >= 20  # a triangle, not a diagonal
        rows = browser.evaluate("document.querySelectorAll('#actions tr').length")
        notes = browser.evaluate("document.querySelectorAll('#notes li').length")
        assert rows > 1 and notes >= 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(ARTIFACTS / "dashboard.png")

        before = browser.evaluate(DRAWN)
        country = _choose(browser, "g", 1)
        assert country and browser.evaluate("document.body.getAttribute('data-drawn')") == "2"
        by_country = browser.evaluate(DRAWN)
        assert by_country != before
        _choose(browser, "g", 0)
        assert browser.evaluate(DRAWN) == before  # "all" draws the whole again
        spend = browser.evaluate(SPEND)
        campaign = _choose(browser, "k", 1)
        # One campaign of several: less spend drawn, and no other campaign's bar.
        assert campaign and 0 < browser.evaluate(SPEND) < spend
        bars = browser.evaluate("document.getElementById('chart-campaigns').data[0].y")
        assert len(bars) == 1
        browser.screenshot(ARTIFACTS / "dashboard-one-campaign.png")
        assert browser.errors() == []


def test_300_campaigns_with_cjk_names_show_top_n_plus_others_in_chromium(
    tmp_path: Path,
) -> None:
    names = {k: f"봄 세일 春のキャンペーン {k}" for k in range(300)}
    data: dict[str, Any] = build_dashboard_data(
        day=DAY,
        currency="KRW",
        segments=segment_rows(300, days=10),
        campaigns=campaign_rows(300, names),
        actions=pd.concat(
            [action_rows(), action_rows().iloc[[0]].assign(object_id="c298", action="unscale")]
        ),
        notes=[],
    )
    page = tmp_path / "dashboard.html"
    page.write_text(build_dashboard_html(data), encoding="utf-8")
    with Chromium() as browser:
        browser.open(page.as_uri())
        browser.wait_for("document.body.getAttribute('data-drawn') === '1'")
        assert browser.errors() == []
        labels = browser.evaluate("document.getElementById('chart-campaigns').data[0].y")
        assert len(labels) == TOP_CAMPAIGNS + 1
        assert labels[0] == "others (285 more campaigns)"  # drawn bottom-up
        assert browser.evaluate("document.getElementById('kpis').textContent").startswith(
            "Spend74,850 KRW"
        )
        assert labels[-1] == "봄 세일 春のキャンペーン 299 (google_ads)"
        options = browser.evaluate("document.getElementById('filter-k').options.length")
        assert options == 1 + TOP_CAMPAIGNS + 1  # "all", the top, "others"
        # The page's fonts have the glyphs (Debian's fonts-noto-cjk; .ci/run installs it).
        assert browser.evaluate("document.fonts.check('14px \"Noto Sans CJK KR\"', '봄春')")
        # A scale back says so in words ("unscale" is the actions column's name for it).
        said = browser.evaluate(
            "Array.from(document.querySelectorAll('#actions tr td:first-child'))"
            ".map(td => td.textContent)"
        )
        assert said == ["scale", "scale back", "pause"], said
        browser.screenshot(ARTIFACTS / "dashboard-300-campaigns.png")
