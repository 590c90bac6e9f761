"""The sandbox as a closed loop: what the fakes' editable objects do to the world's delivery.

An action applied through the fake Graph API or the fake Google Ads (`adperf actions apply`)
changes the JSON state of `adperf.sandbox.ad_objects`. When the world is built or extended, each
new day reads that state once ("controls"): an ad's budget factor is its adset's `daily_budget`
(Facebook) or its campaign budget's `amount_micros` (Google Ads) over the budget the world
started with, 0 when the adset, its campaign or the Google campaign is paused. The day's spend
follows the budget, and installs follow with diminishing returns: the cost per install grows as
`factor ** CPI_ELASTICITY` (a bigger budget reaches past the audience that converts best).

The controls each day was built with are kept in the world (`controls.json`, sparse: only ads
whose factor is not 1), and an extension reuses them for the days the world already had: past
days never change. Without any edit every factor is 1 and the world is the one it always was.

Drift (`drift=True`, opt-in, stored in world.json): some campaigns' payers fade (creative
fatigue: the payer rate decays towards FATIGUE_FLOOR of itself from a day on), and some
campaigns only start delivering some days into the world (new campaigns). Both depend on
(seed, profile) and the day's offset from the world's start only, so extensions agree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adperf.platforms import FACEBOOK, GOOGLE_ADS
from adperf.sandbox.ad_objects import objects_path, sandbox_objects
from adperf.sandbox.entities import Entities, rng_for
from adperf.sandbox.profiles import Profile

FloatArray = npt.NDArray[np.float64]

# CPI = true CPI x factor ** CPI_ELASTICITY: doubling a budget raises its CPI by ~27%, so a
# campaign's ROAS falls as it is scaled, and scaling a winner forever stops paying.
CPI_ELASTICITY = 0.35
FATIGUE_FLOOR = 0.4  # a fatigued campaign's payer rate tends to this share of its own
CONTROLS_FILE = "controls.json"


@dataclass(frozen=True)
class Drift:
    """Per campaign: from which day offset its value fades (and how fast), from which it runs."""

    fatigue_start: FloatArray  # day offset from the world's start; inf = never fades
    fatigue_days: FloatArray  # e-folding time of the fade, days
    launch: FloatArray  # first day offset with delivery; 0 = from the start

    def fatigue(self, offset: int) -> FloatArray:
        """Per campaign: the payer-rate multiplier on day `offset` of the world."""
        past = np.maximum(offset - self.fatigue_start, 0.0)
        past = np.where(np.isfinite(self.fatigue_start), past, 0.0)
        return FATIGUE_FLOOR + (1.0 - FATIGUE_FLOOR) * np.exp(-past / self.fatigue_days)

    def launched(self, offset: int) -> npt.NDArray[np.bool_]:
        """Per campaign: delivering on day `offset`."""
        return offset >= self.launch


def build_drift(seed: int, profile: Profile, ent: Entities, enabled: bool) -> Drift:
    """The world's drift: none unless `enabled`; else a third of the campaigns fade (starting
    around the end of the default history) and a sixth start late (after it)."""
    n = len(ent.campaigns)
    never = Drift(np.full(n, np.inf), np.full(n, 30.0), np.zeros(n))
    if not enabled:
        return never
    # Its own generator: entities and every day's draws stay what they are without drift.
    rng = rng_for(seed, 0, f"drift-{profile.name}")
    order = rng.permutation(n)
    n_fade, n_late = max(1, n // 3), max(1, n // 6)
    fade, late = order[:n_fade], order[n_fade : n_fade + n_late]
    start = np.full(n, np.inf)
    start[fade] = rng.uniform(profile.days - 15, profile.days + 45, n_fade)
    days = np.full(n, 30.0)
    days[fade] = rng.uniform(20.0, 50.0, n_fade)
    launch = np.zeros(n)
    launch[late] = np.floor(rng.uniform(profile.days + 5, profile.days + 40, n_late))
    return Drift(start, days, launch)


def current_factors(world_root: Path, meta: dict[str, Any], ent: Entities) -> FloatArray:
    """Per ad: its budget factor now, from the fakes' object state files (1 where unedited)."""
    out = np.ones(len(ent.ads))
    paths = [objects_path(world_root, meta, p) for p in (FACEBOOK, GOOGLE_ADS)]
    if not any(p.exists() for p in paths):  # nobody edited anything (and no objects to build)
        return out
    base_fb, base_google = sandbox_objects(meta)
    fb, google = _read(paths[0], base_fb), _read(paths[1], base_google)
    for ad in ent.ads:
        c = ent.campaigns[ad.campaign_index]
        # TikTok and Apple Ads objects are not in the loop yet: their ads keep factor 1.
        if c.platform == FACEBOOK:
            adset = fb["adsets"].get(ad.adset_id)
            camp = fb["campaigns"].get(c.campaign_id, {})
            if adset is None:
                continue
            base = base_fb["adsets"][ad.adset_id]["daily_budget"]
            live = adset.get("status") == "ACTIVE" and camp.get("status", "ACTIVE") == "ACTIVE"
            out[ad.index] = float(adset["daily_budget"]) / float(base) if live else 0.0
        elif c.platform == GOOGLE_ADS:
            camp = google["campaigns"].get(c.campaign_id)
            if camp is None:
                continue
            base_id = base_google["campaigns"][c.campaign_id]["budget_id"]
            base = base_google["budgets"][base_id]["amount_micros"]
            now = google["budgets"][camp["budget_id"]]["amount_micros"]
            live = camp.get("status") == "ENABLED"
            out[ad.index] = float(now) / float(base) if live else 0.0
    return out


def _read(path: Path, base: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return base
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def read_ledger(world_root: Path) -> dict[str, dict[int, float]]:
    """The controls the world's days were built with: {date: {ad index: factor != 1}}."""
    path = Path(world_root) / CONTROLS_FILE
    if not path.exists():
        return {}
    raw: dict[str, dict[str, float]] = json.loads(path.read_text(encoding="utf-8"))
    return {day: {int(k): float(v) for k, v in ads.items()} for day, ads in raw.items()}


def write_ledger(world_root: Path, ledger: dict[str, dict[int, float]]) -> None:
    """controls.json (inside a world being built: the world's swap makes it atomic)."""
    doc = {day: {str(k): v for k, v in sorted(ads.items())} for day, ads in sorted(ledger.items())}
    (Path(world_root) / CONTROLS_FILE).write_text(json.dumps(doc, indent=0) + "\n", "utf-8")


def factors_for(day: str, ledger: dict[str, dict[int, float]], now: FloatArray) -> FloatArray:
    """Per ad: the day's factors from the ledger when the day was built before, else `now`."""
    if day not in ledger:
        return now
    out = np.ones(len(now))
    for k, v in ledger[day].items():
        out[k] = v
    return out


def sparse(factors: FloatArray) -> dict[int, float]:
    """The ledger entry of one day: ads whose factor is not 1."""
    return {int(k): float(factors[k]) for k in np.flatnonzero(factors != 1.0)}


def cpi_factor(factors: FloatArray) -> FloatArray:
    """Per ad: the CPI multiplier of its budget factor (1 where paused: nothing is bought)."""
    safe = np.where(factors > 0, factors, 1.0)
    return np.asarray(safe**CPI_ELASTICITY, dtype=np.float64)
