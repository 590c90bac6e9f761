"""The report's picture: daily spend and ROAS per platform, and cohort ROAS curves, as a PNG.

`build_chart_data` is pure (history frames in, chart frames out); `render_chart` draws them with
matplotlib's Agg backend (no display needed) into PNG bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import math
import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless: cron and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

from adperf import platforms  # noqa: E402
from adperf.sinks.summary import cohort_cells  # noqa: E402
from adperf.transform import metrics  # noqa: E402
from adperf.vocabulary import INSTALL_BUCKETS  # noqa: E402

WINDOW_DAYS = 30
TOP_CURVES = 5
OTHERS = "others"  # the curve pooling every campaign past the top TOP_CURVES
MAX_AGE = 30
# Fonts tried in order, glyph by glyph (matplotlib >= 3.6): Korean or Japanese campaign names
# render where a CJK font is installed, DejaVu Sans (bundled with matplotlib) covers the rest.
FONTS = ["DejaVu Sans", "Noto Sans CJK KR", "Noto Sans CJK JP", "NanumGothic"]
PLATFORM_COLORS = platforms.colours()


@dataclass(frozen=True)
class ChartData:
    """What the picture shows, as frames (also the HTML report's tables and the content hash)."""

    day: str
    # date, platform, spend, roas_d0, roas_d7 (by install day; NaN where not known yet)
    daily: pd.DataFrame
    # platform, campaign_id, label, age_days, roas (the window's cohorts chained: chained_curve)
    curves: pd.DataFrame

    def fingerprint(self) -> str:
        """A stable text form of the data, for the report's content hash."""
        return self.daily.to_csv(index=False) + self.curves.to_csv(index=False)


def build_chart_data(
    day: str,
    campaigns: pd.DataFrame,
    cohorts: pd.DataFrame,
    *,
    window_days: int = WINDOW_DAYS,
    top: int = TOP_CURVES,
    spend: pd.DataFrame | None = None,
) -> ChartData:
    """Chart frames from campaign_daily rows of the last `window_days` and the cohort triangle
    as of `day` (cohort_roas rows; each cell's latest row counts).

    A curve is the campaign's cohorts chained (`chained_curve`): its step to age A comes from
    the cohorts that reached A; "ROAS by install day" is each cohort's D0 and, once reached, D7.

    `campaigns` has date, platform, campaign_id, campaign_name, spend; `cohorts` has cohort_date,
    platform, campaign_id, age_days, revenue, spend, as_of; `spend` (optional: ad_spend_daily
    rows, date, platform, spend) gives the daily spend when it has more days than `campaigns`.
    Amounts in the report currency.
    """
    last = dt.date.fromisoformat(day)
    first = (last - dt.timedelta(days=window_days - 1)).isoformat()
    campaigns = _typed(campaigns, ["date", "platform", "campaign_id"], ["spend"])
    cohorts = _typed(
        cohorts, ["cohort_date", "platform", "campaign_id", "as_of"], ["revenue", "spend"]
    ).astype({"age_days": "int64"})
    camp = campaigns[
        ~campaigns["platform"].isin(INSTALL_BUCKETS)
        & (campaigns["date"].astype(str) >= first)
        & (campaigns["date"].astype(str) <= day)
    ].assign(date=lambda d: d["date"].astype(str))
    # The triangle as of `day` (each cell once): cohorts of the last MAX_AGE days at every age
    # they reached, so the D30 point of a curve is the cohort of 30 days ago.
    oldest = (last - dt.timedelta(days=MAX_AGE)).isoformat()
    cells = cohort_cells(cohorts[cohorts["as_of"].astype(str) <= day])
    cohort = cells[
        ~cells["platform"].isin(INSTALL_BUCKETS) & cells["cohort_date"].between(oldest, day)
    ]

    daily_spend = camp
    if spend is not None and len(spend):
        ads = _typed(spend, ["date", "platform"], ["spend"])
        ads = ads[~ads["platform"].isin(INSTALL_BUCKETS) & ads["date"].between(first, day)]
        # ad_spend_daily holds each day's latest (restated) figure for the platforms' lookback.
        if ads["date"].nunique() > camp["date"].nunique():
            daily_spend = ads
    parts = [daily_spend.groupby(["date", "platform"], as_index=False).agg(spend=("spend", "sum"))]
    for age in (0, 7):
        at_age = cohort[cohort["age_days"] == age]
        pooled = at_age.groupby(["cohort_date", "platform"], as_index=False).agg(
            revenue=("revenue", "sum"), spend=("spend", "sum")
        )
        pooled[f"roas_d{age}"] = _div(pooled["revenue"], pooled["spend"])
        parts.append(
            pooled.rename(columns={"cohort_date": "date"})[["date", "platform", f"roas_d{age}"]]
        )
    # Concatenate and take each column's value per key (a merge of empty text keys breaks).
    columns = ["date", "platform", "spend", "roas_d0", "roas_d7"]
    stacked = pd.concat([p.reindex(columns=columns) for p in parts], ignore_index=True)
    daily = (
        stacked.astype({c: "float64" for c in columns[2:]})
        .groupby(["date", "platform"], as_index=False)
        .first()
    )
    daily = daily[daily["date"].between(first, day)]
    daily = daily.sort_values(["platform", "date"], kind="stable").reset_index(drop=True)

    by_spend = (
        camp.groupby(["platform", "campaign_id"], as_index=False)
        .agg(spend=("spend", "sum"), name=("campaign_name", "last"))
        .sort_values(["spend", "platform", "campaign_id"], ascending=[False, True, True])
    )
    n_campaigns = camp.groupby(["platform", "campaign_id"]).ngroups
    curves = []
    for row in by_spend.head(top).itertuples():
        rows = cohort[
            (cohort["platform"] == row.platform) & (cohort["campaign_id"] == row.campaign_id)
        ]
        pooled = chained_curve(rows)
        name = str(row.name) if isinstance(row.name, str) and row.name else ""
        if not name or not drawable(name):
            # Only where no installed font has a glyph of it (no CJK font: apt-get install
            # fonts-noto-cjk): boxes say nothing, the id at least finds the campaign.
            name = f"id {row.campaign_id}"
        curves.append(
            pd.DataFrame(
                {
                    "platform": row.platform,
                    "campaign_id": row.campaign_id,
                    "label": f"{name[:32]} ({row.platform})",
                    "age_days": pooled["age_days"],
                    "roas": pooled["roas"],
                }
            )
        )
    if n_campaigns > top:
        # The rest pooled as one curve: 300 campaigns make one more line, not 295 more labels.
        head = by_spend.head(top)
        shown = set(zip(head["platform"], head["campaign_id"], strict=True))
        keys = zip(cohort["platform"], cohort["campaign_id"], strict=True)
        rest = cohort[[k not in shown for k in keys]]
        pooled = chained_curve(rest)
        curves.append(
            pd.DataFrame(
                {
                    "platform": OTHERS,
                    "campaign_id": OTHERS,
                    "label": f"others ({n_campaigns - top:,} more)",
                    "age_days": pooled["age_days"],
                    "roas": pooled["roas"],
                }
            )
        )
    columns = ["platform", "campaign_id", "label", "age_days", "roas"]
    curve_frame = (
        pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=columns)
    )[columns]
    return ChartData(day=day, daily=daily, curves=curve_frame.reset_index(drop=True))


def chained_curve(cells: pd.DataFrame, max_age: int = MAX_AGE) -> pd.DataFrame:
    """One cumulative ROAS curve (age_days, roas) from cohort cells (cohort_date, age_days,
    revenue, spend; several campaigns' cells are summed).

    D0 pools every cohort. Each later age adds what the cohorts that reached it earned since
    the age before, per dollar of their spend (a chain-ladder development). Pooling each age's
    own cohorts instead lets the curve fall when the few old cohorts behind D30 were weaker than
    the many young ones behind D3; this one only falls on refunds.
    """
    cells = cells[cells["age_days"] <= max_age]
    cohort = cells.groupby(["cohort_date", "age_days"])[["revenue", "spend"]].sum()
    revenue = cohort["revenue"].unstack("age_days").sort_index(axis=1)
    spend = cohort["spend"].unstack("age_days").max(axis=1)  # a cohort's spend, at every age
    ages, roas = [int(a) for a in revenue.columns], list[float]()
    for i, age in enumerate(ages):
        reached = revenue[age].notna() & (spend > 0)
        if i == 0:
            gained = revenue.loc[reached, age].sum()
        else:
            reached &= revenue[ages[i - 1]].notna()
            gained = (revenue.loc[reached, age] - revenue.loc[reached, ages[i - 1]]).sum()
        step = metrics.roas_of(float(gained), float(spend[reached].sum()))
        base = roas[-1] if roas else 0.0
        roas.append(math.nan if step is None or math.isnan(base) else base + step)
    return pd.DataFrame(
        {"age_days": pd.Series(ages, dtype="int64"), "roas": pd.Series(roas, dtype="float64")}
    )


def render_chart(data: ChartData, currency: str, target_roas: float | None = None) -> bytes:
    """The picture as PNG bytes: spend per platform, ROAS D0/D7 per platform, cohort curves."""
    with plt.rc_context({"font.family": _fonts_for(data, currency), "font.size": 9}):
        fig = draw_chart(data, currency, target_roas)
        try:
            buffer = io.BytesIO()
            # No date or software version in the file: the same data gives the same bytes.
            fig.savefig(buffer, format="png", metadata={"Software": None})
        finally:
            plt.close(fig)
    return buffer.getvalue()


def draw_chart(data: ChartData, currency: str, target_roas: float | None = None) -> Figure:
    """The picture as a matplotlib Figure (laid out; the caller closes it).

    Names reach it only when an installed font draws them (`drawable`), so matplotlib's
    "Glyph … missing from font" warning means a real regression and is left to show.
    """
    last = dt.date.fromisoformat(data.day)
    dates = pd.date_range(last - dt.timedelta(days=WINDOW_DAYS - 1), last, freq="D")
    with plt.rc_context({"font.family": _fonts_for(data, currency), "font.size": 9}):
        fig, (ax_spend, ax_roas, ax_curve) = plt.subplots(
            3, 1, figsize=(9, 10), dpi=100, height_ratios=[1, 1, 1.2]
        )
        try:
            _spend_panel(ax_spend, data.daily, dates, currency)
            _roas_panel(ax_roas, data.daily, dates, target_roas)
            _curve_panel(ax_curve, data.curves, target_roas)
            fig.suptitle(f"adperf — {data.day}", fontsize=13, fontweight="bold")
            fig.tight_layout()
            # tight_layout leaves a placeholder layout engine behind, and savefig then draws the
            # whole figure once more before drawing it into the PNG (for a layout that runs at
            # draw time, which this figure no longer has): no engine, one draw. Same bytes.
            fig.set_layout_engine(None)
        except BaseException:
            plt.close(fig)
            raise
    return fig


def _spend_panel(ax: Axes, daily: pd.DataFrame, dates: pd.DatetimeIndex, currency: str) -> None:
    ax.set_title(f"Daily spend per platform ({currency}), last {WINDOW_DAYS} days", loc="left")
    spend = daily.pivot_table(index="date", columns="platform", values="spend", aggfunc="sum")
    spend.index = pd.to_datetime(spend.index)
    spend = spend.reindex(dates).fillna(0.0)
    bottom = pd.Series(0.0, index=dates)
    for platform in spend.columns:
        ax.bar(
            dates,
            spend[platform],
            bottom=bottom,
            width=0.8,
            label=platform,
            color=PLATFORM_COLORS.get(str(platform)),
        )
        bottom = bottom + spend[platform]
    if not len(spend.columns) or not bottom.any():
        _empty(ax, "no spend in the warehouse for these days")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    _date_axis(ax, dates)
    if len(spend.columns):
        ax.legend(loc="upper left", frameon=False, ncols=len(spend.columns))


def _roas_panel(
    ax: Axes, daily: pd.DataFrame, dates: pd.DatetimeIndex, target: float | None
) -> None:
    ax.set_title("ROAS by install day: D0 (solid), D7 (dashed)", loc="left")
    drawn = False
    for platform, rows in daily.groupby("platform"):
        series = rows.assign(date=pd.to_datetime(rows["date"])).set_index("date")
        color = PLATFORM_COLORS.get(str(platform))
        for column, style in (("roas_d0", "-"), ("roas_d7", "--")):
            values = series[column].astype("float64").reindex(dates)
            if values.notna().any():
                label = f"{platform} {column[-2:].upper()}"
                ax.plot(dates, values, style, marker="o", ms=3, color=color, label=label)
                drawn = True
    _target_line(ax, target)
    if not drawn:
        _empty(ax, "no cohort ROAS in the warehouse for these days")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _date_axis(ax, dates)
    if drawn:
        ax.legend(loc="upper left", frameon=False, fontsize=8, ncols=2)


def _curve_panel(ax: Axes, curves: pd.DataFrame, target: float | None) -> None:
    ax.set_title(
        f"Cumulative cohort ROAS by age (D0…D{MAX_AGE}), top campaigns by spend, the last "
        f"{WINDOW_DAYS} days' cohorts chained",
        loc="left",
    )
    for (platform, _campaign), rows in curves.groupby(["platform", "campaign_id"], sort=False):
        rows = rows.sort_values("age_days")
        pooled = {"color": "grey", "linestyle": "--"} if platform == OTHERS else {}
        ax.plot(
            rows["age_days"],
            rows["roas"].astype("float64"),
            marker="o",
            label=rows["label"].iloc[0],
            **pooled,  # type: ignore[arg-type]
        )
    _target_line(ax, target)
    if not len(curves):
        _empty(ax, "no campaign cohorts yet")
    ax.set_xlim(-0.5, MAX_AGE + 0.5)
    ax.set_xticks([0, 3, 7, 14, 21, 30])
    ax.set_xlabel("days since install")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(axis="y", alpha=0.3)
    if len(curves):
        ax.legend(loc="upper left", frameon=False, fontsize=8)


def _target_line(ax: Axes, target: float | None) -> None:
    """The target ROAS as a dotted line, labelled at the right; room above for the legend."""
    top = max(ax.get_ylim()[1], (target or 0.0)) * 1.25
    ax.set_ylim(0, top if top > 0 else 1.0)
    if target is not None:
        ax.axhline(target, color="grey", linewidth=0.8, linestyle=":")
        ax.text(1.0, target, f" target {target:.0%}", transform=ax.get_yaxis_transform(),
                fontsize=8, color="grey", va="center", ha="left")  # fmt: skip


def _date_axis(ax: Axes, dates: pd.DatetimeIndex) -> None:
    half_day = pd.Timedelta(hours=12)
    # matplotlib converts dates itself (its stubs only name floats).
    ax.set_xlim(dates[0] - half_day, dates[-1] + half_day)  # type: ignore[arg-type]
    ticks = dates[::-7][::-1]
    ax.set_xticks(ticks)
    ax.set_xticklabels([d.strftime("%m-%d %a") for d in ticks])
    ax.grid(axis="y", alpha=0.3)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


@functools.cache
def _installed_fonts() -> list[str]:
    """The families of FONTS installed here (matplotlib logs a warning for each missing one)."""
    names = {f.name for f in font_manager.fontManager.ttflist}
    if not all(family in names for family in FONTS):
        # matplotlib caches the system's fonts once (~/.cache/matplotlib/fontlist-*.json) and
        # never looks again: a font package installed after that (fonts-noto-cjk) stays unseen
        # and CJK names become ids. Add the font files the cache does not know.
        known = {f.fname for f in font_manager.fontManager.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                with contextlib.suppress(OSError, RuntimeError):  # a broken font file: skip it
                    font_manager.fontManager.addfont(path)
        names = {f.name for f in font_manager.fontManager.ttflist}
    return [family for family in FONTS if family in names] or ["DejaVu Sans"]


# Characters of the chart's own texts beyond ASCII: the title's dash, the curve panel's
# ellipsis, the tick formatters' minus sign.
_OWN_CHARS = "\u2014\u2026\u2212"


def _fonts_for(data: ChartData, currency: str) -> list[str]:
    """The families of `_installed_fonts` the chart's texts need: the first alone when it has a
    glyph of each of their characters, else all of them.

    matplotlib falls back glyph by glyph, so families that no glyph comes from change no pixel,
    but each costs font lookups for every text drawn (~20% of a render with two CJK fonts
    installed).
    """
    families = _installed_fonts()
    texts = [*data.curves["label"].astype(str), *data.daily["platform"].astype(str)]
    chars = {ord(c) for text in [*texts, currency, data.day, _OWN_CHARS] for c in text}
    if chars <= _family_chars(families[0]):
        return families[:1]
    return families


@functools.cache
def _family_chars(family: str) -> frozenset[int]:
    """Code points the installed font of `family` can draw."""
    path = font_manager.findfont(family)
    return frozenset(FT2Font(path).get_charmap()) if os.path.exists(path) else frozenset()


@functools.cache
def _drawable_chars() -> frozenset[int]:
    """Code points some installed font of FONTS can draw."""
    chars: set[int] = set()
    for family in _installed_fonts():
        path = font_manager.findfont(family)
        if os.path.exists(path):
            chars.update(FT2Font(path).get_charmap())
    return frozenset(chars)


def drawable(text: str) -> bool:
    """Whether every character of `text` has a glyph in an installed font of FONTS."""
    chars = _drawable_chars()
    return all(ord(c) in chars for c in text)


def _typed(df: pd.DataFrame, texts: list[str], numbers: list[str]) -> pd.DataFrame:
    """`df` with its key columns as text and its amounts as floats (warehouse rows vary)."""
    # Dates come as datetime.date from the warehouse and as text from the lake.
    out = df.astype({c: "str" for c in texts})
    for col in numbers:
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    return out


def _div(num: pd.Series, den: pd.Series) -> pd.Series:
    """ROAS (metrics.roas) as float64 with NaN where undefined, as matplotlib wants it."""
    return metrics.roas(num, den).astype("float64").where(den.astype("float64") > 0)
