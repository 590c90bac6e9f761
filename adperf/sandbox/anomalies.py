"""Anomalies planted in a sandbox world, for the watch (issue 19) to find.

A world option: `build_world(..., anomalies=[Anomaly(...)])`. Each anomaly changes the world's
generated day data from its `start` day on, and nothing before it; a world without anomalies is
byte-identical to one built before this module existed (every factor is exactly 1.0 and no
random draw is added). The kinds:

- `cpi_spike`: a campaign pays `factor` times more for the same installs (spend x factor after
  delivery; installs unchanged).
- `install_drop`: a campaign delivers `factor` of its usual volume (spend and installs alike,
  through its budget; its CPI stays).
- `install_gap`: a platform claims `factor` times the installs it claims normally for a campaign
  (its `installs_reported`), while the MMP sees the same installs as before.
- `restricted_jump`: `factor` of the paid installs (on top of the usual 1 in 25) come through
  networks that withhold user-level data: the MMP reports them as 'restricted'.
- `overspend`: a platform's (or a campaign's) budgets are `factor` times the usual, so it spends
  (and installs) that much more: pacing ahead of a budget plan made for the usual spend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from adperf.errors import ConfigError

KINDS = ("cpi_spike", "install_drop", "install_gap", "restricted_jump", "overspend")
# The kinds that target one campaign, and those that may target a platform instead.
_CAMPAIGN_KINDS = frozenset({"cpi_spike", "install_drop", "install_gap"})


@dataclass(frozen=True)
class Anomaly:
    """One planted anomaly: `kind` from day `start` on, of size `factor`, on a campaign (its id)
    or a platform (`restricted_jump` applies to every paid install)."""

    kind: str
    start: date
    factor: float
    campaign_id: str | None = None
    platform: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The anomaly as world.json records it."""
        return {**asdict(self), "start": self.start.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Anomaly:
        return cls(**{**data, "start": date.fromisoformat(str(data["start"]))})


class _WorldView(Protocol):
    """What the planting reads and changes of a world build (adperf.sandbox.world._World)."""

    dates: list[date]
    n_days: int
    ad_camp: npt.NDArray[np.int64]
    spend_minor: npt.NDArray[np.int64]
    installs_reported: npt.NDArray[np.int64]


class Planted:
    """The anomalies of one world build, resolved to its campaigns and ads."""

    def __init__(
        self,
        anomalies: Sequence[Anomaly],
        campaign_ids: Sequence[str],
        campaign_platforms: Sequence[str],
        ad_campaigns: npt.NDArray[np.int64],
    ) -> None:
        self.anomalies = tuple(anomalies)
        self._camp = {cid: k for k, cid in enumerate(campaign_ids)}
        self._platform = np.array(campaign_platforms, dtype=object)
        self._ad_camp = ad_campaigns
        for a in self.anomalies:
            _check(a, self._camp, set(campaign_platforms))

    def _ads(self, a: Anomaly) -> npt.NDArray[np.bool_]:
        """Per ad: whether the anomaly applies to it."""
        camp = self._ad_camp
        if a.campaign_id is not None:
            hit: npt.NDArray[np.bool_] = camp == self._camp[a.campaign_id]
            return hit
        if a.platform is not None:
            on: npt.NDArray[np.bool_] = self._platform[camp] == a.platform
            return on
        return np.ones(len(camp), dtype=bool)

    def delivery(self, day: date) -> npt.NDArray[np.float64] | float:
        """Per ad, the factor on the day's budgets (1.0: none planted)."""
        factor: npt.NDArray[np.float64] | float = 1.0
        for a in self.anomalies:
            if a.kind in ("install_drop", "overspend") and day >= a.start:
                factor = factor * np.where(self._ads(a), a.factor, 1.0)
        return factor

    def after_delivery(self, world: _WorldView) -> None:
        """Change the generated delivery of the days from each anomaly's start on."""
        for a in self.anomalies:
            if a.kind not in ("cpi_spike", "install_gap"):
                continue
            days = np.array([d >= a.start for d in world.dates[: world.n_days]])
            cells = np.outer(days, self._ads(a))
            target = world.spend_minor if a.kind == "cpi_spike" else world.installs_reported
            target[cells] = np.rint(target[cells] * a.factor).astype(np.int64)

    def restricted(
        self,
        install_day: npt.NDArray[np.int64],
        af_suffix: npt.NDArray[np.int64],
        dates: list[date],
    ) -> npt.NDArray[np.bool_]:
        """Per user: made 'restricted' by an anomaly (picked by the AppsFlyer id's suffix, as
        the usual restricted installs are: no random draw added)."""
        out = np.zeros(len(install_day), dtype=bool)
        for a in self.anomalies:
            if a.kind != "restricted_jump":
                continue
            first = next((i for i, d in enumerate(dates) if d >= a.start), len(dates))
            # The suffix's hundreds digit: independent of the usual pick (suffix % 25).
            out |= (install_day >= first) & ((af_suffix // 100) % 100 < round(a.factor * 100))
        return out


def _check(a: Anomaly, campaigns: dict[str, int], platforms: set[str]) -> None:
    if a.kind not in KINDS:
        raise ConfigError(f"sandbox: unknown anomaly kind {a.kind!r}. Fix: one of {list(KINDS)}")
    if a.factor <= 0:
        raise ConfigError(f"sandbox: anomaly {a.kind} factor {a.factor}. Fix: a positive factor")
    if a.campaign_id is not None and a.campaign_id not in campaigns:
        raise ConfigError(
            f"sandbox: anomaly {a.kind} names campaign {a.campaign_id!r}, which the world does "
            "not have. Fix: a campaign_id of the world's ads.csv"
        )
    if a.platform is not None and a.platform not in platforms:
        raise ConfigError(
            f"sandbox: anomaly {a.kind} names platform {a.platform!r}. Fix: one of "
            f"{sorted(platforms)}"
        )
    if a.kind in _CAMPAIGN_KINDS and a.campaign_id is None:
        raise ConfigError(f"sandbox: anomaly {a.kind} needs a campaign_id. Fix: name one")
    if a.kind == "restricted_jump" and a.factor >= 1:
        raise ConfigError(
            f"sandbox: restricted_jump factor {a.factor} is a share of paid installs. Fix: 0 < "
            "factor < 1"
        )
