"""The PNG chart a person can read: names in any script drawn as glyphs, never 300 labels."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import os
import warnings
from collections.abc import Iterator

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.layout_engine import PlaceHolderLayoutEngine

from adperf.sinks import chart
from adperf.sinks.chart import TOP_CURVES, build_chart_data, draw_chart, drawable, render_chart

DAY = "2026-11-27"
CJK_NAMES = ["봄 세일 VIP 리타겟팅", "春のキャンペーン_iOS", "春季促销 安卓", "KR_iOS_purchase"]
# Egyptian hieroglyphs: in no font of chart.FONTS (nor in Noto Sans CJK).
NO_FONT_NAME = "\U00013000\U00013001"


def _require_cjk_font() -> None:
    """The test needs Debian's fonts-noto-cjk; under CI=true its absence is a failure."""
    if drawable("봄春促"):
        return
    reason = "no CJK font for matplotlib (Debian: apt-get install fonts-noto-cjk)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _frames(names: list[str], days: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """campaign_daily and a cohort triangle for one facebook campaign per name: campaign k
    spends 1000 - k a day (so the ranking is by position) and earns 10% more at each age."""
    last = dt.date.fromisoformat(DAY)
    campaigns, cohorts = [], []
    for k, name in enumerate(names):
        cid = f"1202{k:014d}"
        spend = 1000.0 - k
        for back in range(days):
            day = (last - dt.timedelta(days=back)).isoformat()
            campaigns.append(
                {
                    "date": day,
                    "platform": "facebook",
                    "campaign_id": cid,
                    "campaign_name": name,
                    "spend": spend,
                }  # fmt: skip
            )
            for age in (0, 3, 7):
                if age <= back:
                    cohorts.append(
                        {
                            "cohort_date": day,
                            "platform": "facebook",
                            "campaign_id": cid,
                            "age_days": age,
                            "revenue": spend * (0.1 + 0.1 * age),
                            "spend": spend,
                            "as_of": DAY,
                        }  # fmt: skip
                    )
    return pd.DataFrame(campaigns), pd.DataFrame(cohorts)


@pytest.fixture()
def fresh_font_caches() -> Iterator[None]:
    chart._installed_fonts.cache_clear()
    chart._drawable_chars.cache_clear()
    yield
    chart._installed_fonts.cache_clear()
    chart._drawable_chars.cache_clear()


def test_cjk_names_render_as_glyphs_not_ids() -> None:
    _require_cjk_font()
    data = build_chart_data(DAY, *_frames(CJK_NAMES))
    labels = list(dict.fromkeys(data.curves["label"]))
    assert labels == [f"{name} (facebook)" for name in CJK_NAMES]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = render_chart(data, "USD", 1.0)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert missing == []
    assert png.startswith(b"\x89PNG")


def test_a_name_no_font_can_draw_falls_back_to_its_id_without_warnings() -> None:
    assert not drawable(NO_FONT_NAME)
    data = build_chart_data(DAY, *_frames([NO_FONT_NAME, "KR_iOS_purchase"]))
    labels = list(dict.fromkeys(data.curves["label"]))
    assert labels == ["id 120200000000000000 (facebook)", "KR_iOS_purchase (facebook)"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render_chart(data, "USD")
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_a_font_cache_older_than_the_cjk_fonts_still_finds_them(
    monkeypatch: pytest.MonkeyPatch, fresh_font_caches: None
) -> None:
    _require_cjk_font()
    # matplotlib's cache as written before `apt-get install fonts-noto-cjk`: no CJK family.
    stale = [f for f in font_manager.fontManager.ttflist if "CJK" not in f.name]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", stale)
    assert "Noto Sans CJK KR" in chart._installed_fonts()
    assert drawable("봄 세일")


def test_300_campaigns_give_at_most_top_plus_others_labels_none_overlapping() -> None:
    names = [f"KR_Android_Broad_Campaign_{k:03d}_{'봄' * (k % 3)}" for k in range(300)]
    data = build_chart_data(DAY, *_frames(names, days=8))
    assert data.curves["label"].nunique() == TOP_CURVES + 1
    assert data.curves["label"].iloc[-1] == f"others ({300 - TOP_CURVES} more)"
    fig = draw_chart(data, "USD", 1.0)
    try:
        fig.canvas.draw()  # lays the legends out: before it their texts sit at the origin
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        legend_texts = [
            t for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()
        ]
        campaign_labels = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
        assert len(campaign_labels) <= TOP_CURVES + 1
        assert campaign_labels[-1].startswith("others")
        for ax in fig.axes:
            texts = [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
            legend = ax.get_legend()
            texts += list(legend.get_texts()) if legend else []
            boxes = [t.get_window_extent(renderer) for t in texts]
            for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
                assert not a.overlaps(b), (texts[i].get_text(), texts[j].get_text())
        assert len(legend_texts) <= 2 * 2 + 2 + TOP_CURVES + 1  # spend, ROAS, curves
    finally:
        plt.close(fig)


def test_latin_names_render_with_the_first_font_alone_to_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = build_chart_data(DAY, *_frames(["KR_iOS_purchase", "Broad — Android"]))
    assert chart._fonts_for(data, "USD") == chart._installed_fonts()[:1]

    png = render_chart(data, "USD", 1.0)
    monkeypatch.setattr(chart, "_fonts_for", lambda *_: chart._installed_fonts())

    assert render_chart(data, "USD", 1.0) == png


def test_names_beyond_the_first_font_keep_every_installed_font() -> None:
    _require_cjk_font()
    data = build_chart_data(DAY, *_frames(["KR_iOS_purchase", CJK_NAMES[0]]))

    fonts = chart._fonts_for(data, "USD")

    assert fonts == chart._installed_fonts() and "Noto Sans CJK KR" in fonts


def test_the_png_is_drawn_once_and_is_the_bytes_of_a_figure_drawn_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = build_chart_data(DAY, *_frames(["KR_iOS_purchase", "Broad — Android"]))
    draws = []
    real_draw = Figure.draw

    def counted(fig: Figure, renderer: object) -> None:
        draws.append(fig)
        real_draw(fig, renderer)

    monkeypatch.setattr(Figure, "draw", counted)

    png = render_chart(data, "USD", 1.0)

    assert len(draws) == 1
    # As before: tight_layout's placeholder engine left in place, so savefig draws twice.
    with plt.rc_context({"font.family": chart._fonts_for(data, "USD"), "font.size": 9}):
        fig = draw_chart(data, "USD", 1.0)
        fig.set_layout_engine(PlaceHolderLayoutEngine(True, True))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
        plt.close(fig)
    assert len(draws) == 3
    assert buffer.getvalue() == png
