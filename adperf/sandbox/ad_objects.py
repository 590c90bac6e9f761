"""The sandbox's editable ad objects: Facebook adsets and Google Ads campaigns with their budgets.

The fakes serve these for `adperf actions apply`: an adset's `status` and `daily_budget`, a
Google Ads campaign's `status` and its campaign budget's `amount_micros`. They start from the
world's entities (an adset's budget is the sum of its ads' budgets) and every change is kept in
a JSON file, so a second CLI process sees what the first one changed.

The file sits *beside* the world folder (`<root>.objects/`), not in it: extending the world in
time swaps the whole world folder for a new one, and a paused adset must stay paused.
"""

from __future__ import annotations

import fcntl
import functools
import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adperf import atomic
from adperf.platforms import FACEBOOK, GOOGLE_ADS
from adperf.sandbox.entities import CURRENCY_DIGITS, entities_of
from adperf.sandbox.profiles import get_profile


def objects_path(world_root: Path, meta: dict[str, Any], platform: str) -> Path:
    """The state file of one platform's objects, beside the world (see the module docstring).

    Named by seed and profile: a world rebuilt with others never reads a stale file.
    """
    root = Path(world_root)
    name = f"{platform}-seed{int(meta['seed'])}-{meta['profile']}.json"
    return root.parent / f"{root.name}.objects" / name


@functools.cache
def _objects(seed: int, profile: str) -> tuple[str, str]:
    fb, google = _build_objects(seed, profile)
    return json.dumps(fb), json.dumps(google)


def sandbox_objects(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Facebook objects, Google Ads objects) of a world as they are before anyone edits them.

    Facebook: {"campaigns": {id: {...}}, "adsets": {id: {status, daily_budget (minor units of
    the account currency), name, campaign_id, account_id}}}; Google Ads: {"campaigns": {id:
    {customer_id, name, status, budget_id}}, "budgets": {id: {customer_id, amount_micros,
    explicitly_shared}}}.
    """
    fb, google = _objects(int(meta["seed"]), str(meta["profile"]))
    return json.loads(fb), json.loads(google)


def _build_objects(seed: int, profile: str) -> tuple[dict[str, Any], dict[str, Any]]:
    ent = entities_of(seed, get_profile(profile))
    fb: dict[str, Any] = {"campaigns": {}, "adsets": {}}
    google: dict[str, Any] = {"campaigns": {}, "budgets": {}}
    budgets: dict[str, float] = {}
    for ad in ent.ads:
        budgets[ad.adset_id] = budgets.get(ad.adset_id, 0.0) + ad.daily_budget
    for ad in ent.ads:
        c = ent.campaigns[ad.campaign_index]
        digits = CURRENCY_DIGITS[c.currency]
        if c.platform == FACEBOOK:
            fb["campaigns"][c.campaign_id] = {
                "name": c.name,
                "status": "ACTIVE",
                "account_id": c.account_id,
            }
            fb["adsets"][ad.adset_id] = {
                "name": ad.adset_name,
                "status": "ACTIVE",
                "campaign_id": c.campaign_id,
                "account_id": c.account_id,
                # Budgets in the Marketing API are integers in the currency's minor unit.
                "daily_budget": max(1, round(budgets[ad.adset_id] * 10**digits)),
            }
        elif c.platform == GOOGLE_ADS:
            budget_id = str(10_000_000_000 + zlib.crc32(f"budget-{c.campaign_id}".encode()))
            total = sum(budgets[a.adset_id] for a in _first_ads(ent.ads, c.index))
            google["campaigns"][c.campaign_id] = {
                "customer_id": c.account_id,
                "name": c.name,
                "status": "ENABLED",
                "budget_id": budget_id,
            }
            # Google Ads budgets are multiples of the currency's minimum unit (a cent).
            unit = 10 ** (6 - digits)
            google["budgets"][budget_id] = {
                "customer_id": c.account_id,
                "amount_micros": max(unit, round(total * 10**digits) * unit),
                "explicitly_shared": False,
            }
    return fb, google


def _first_ads(ads: Any, campaign_index: int) -> Iterator[Any]:
    """One ad per adset of the campaign (an adset's budget is counted once)."""
    seen: set[str] = set()
    for ad in ads:
        if ad.campaign_index == campaign_index and ad.adset_id not in seen:
            seen.add(ad.adset_id)
            yield ad


class JsonState:
    """A JSON document in a file, shared by processes: read and updated under a file lock.

    Writes go to a temp file in the same folder, then `os.replace`: a killed writer leaves the
    old document, never half a new one. Without a path the state lives in memory only.
    `initial` (a document, or a function making one) is used only when the file is missing.
    """

    def __init__(
        self,
        initial: dict[str, Any] | Callable[[], dict[str, Any]],
        path: Path | None = None,
    ) -> None:
        self._path = Path(path) if path is not None else None
        self._initial = initial
        self._memory: dict[str, Any] = {}
        if self._path is None:
            self._memory = json.loads(json.dumps(self._first()))

    def _first(self) -> dict[str, Any]:
        # Made on first use only: building the sandbox's objects takes a second or two, which a
        # run that never reads them (the daily pipeline) should not pay.
        return self._initial() if callable(self._initial) else self._initial

    @property
    def path(self) -> Path | None:
        """The file, or None for an in-memory state."""
        return self._path

    def read(self) -> dict[str, Any]:
        """The current document (a copy)."""
        if self._path is None:
            return json.loads(json.dumps(self._memory))  # type: ignore[no-any-return]
        with self._locked():
            return self._load()

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `change` to the document in place and save it, atomically; return the result."""
        if self._path is None:
            change(self._memory)
            return json.loads(json.dumps(self._memory))  # type: ignore[no-any-return]
        with self._locked():
            doc = self._load()
            change(doc)
            self._write(doc)
            return doc

    def _load(self) -> dict[str, Any]:
        assert self._path is not None
        if not self._path.exists():
            self._write(self._first())
        doc: dict[str, Any] = json.loads(self._path.read_text(encoding="utf-8"))
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        assert self._path is not None
        atomic.write_json(self._path, doc, indent=1, sort_keys=True, ensure_ascii=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._path.with_name(f".{self._path.name}.lock"), "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
