"""Each task needs only its own source: a production config missing one key fails exactly the
tasks that read that source, with a ConfigError naming the key, and no other task.

A production config ([adperf] sandbox = false) whose sources are real local things: the tiny
world's payments database (SQLite through SQLAlchemy), log files and FX CSV, and the sandbox's
fake Graph API and MMP serving over loopback HTTP, reached through the production code path
(URLs and tokens from the config and the environment, as a company would set them). Google Ads
has no production endpoint here (its production path needs TLS and OAuth): with its customers
configured its pull fails on the missing developer token, a failure that names no config key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import pytest
from luigi.task_register import Register

from adperf.errors import ConfigError
from tasks import config, ops, resources
from tasks.extract import AdSpend, EventLogs, Installs, LogFiles, Payments

from .conftest import END, configure

# The extract task of each source (and LogFiles, the logs' external input).
TASKS = {
    "AdSpend(facebook)": AdSpend(platform="facebook", date=END),
    "AdSpend(google_ads)": AdSpend(platform="google_ads", date=END),
    "Installs": Installs(date=END),
    "Payments": Payments(date=END),
    "LogFiles": LogFiles(date=END),
    "EventLogs": EventLogs(date=END),
}
# Google Ads' pull without production credentials: a ConfigError naming no luigi.cfg key.
GOOGLE_NO_TOKEN = "no developer token"

# key -> (section, option, the message names, the tasks that fail on it)
MISSING = {
    "facebook ad accounts": (
        "facebook", "ad_account_ids", "[facebook] ad_account_ids", {"AdSpend(facebook)"}
    ),
    "facebook graph url": ("facebook", "graph_url", "[facebook] graph_url", {"AdSpend(facebook)"}),
    "google_ads customers": (
        "google_ads", "customer_ids", "[google_ads] customer_ids", {"AdSpend(google_ads)"}
    ),
    "google_ads endpoint": (
        "google_ads", "endpoint", "[google_ads] endpoint", {"AdSpend(google_ads)"}
    ),
    "mmp app ids": ("mmp", "app_ids", "[mmp] app_ids", {"Installs"}),
    "mmp base url": ("mmp", "base_url", "[mmp] base_url", {"Installs"}),
    "payments url": ("payments", "url", "[payments] url or ADPERF_PAYMENTS_URL", {"Payments"}),
    # LogFiles cannot say where the files are: its complete() raises (luigi: a scheduling
    # failure, reported as a missing dependency); EventLogs then cannot run.
    "logs path": ("logs", "path", "[logs] path", {"LogFiles"}),
    # Payments are converted to the report currency at extraction.
    "fx rates path": ("fx", "rates_path", "[fx] rates_path", {"Payments"}),
}  # fmt: skip


class Outcomes:
    """What each task did in a luigi run: succeeded (or was complete), or failed (in run or
    while scheduling)."""

    def __init__(self) -> None:
        self.succeeded: set[str] = set()
        self.failed: dict[str, BaseException] = {}
        self.missing: set[str] = set()  # complete() raised, or an external input is absent
        self._handlers: list[tuple[Any, Any]] = []

    def name(self, task: luigi.Task) -> str | None:
        return next((n for n, t in TASKS.items() if t.task_id == task.task_id), None)

    def __enter__(self) -> Outcomes:
        def ok(task: luigi.Task) -> None:
            if (name := self.name(task)) is not None:
                self.succeeded.add(name)

        def bad(task: luigi.Task, exc: BaseException) -> None:
            if (name := self.name(task)) is not None:
                self.failed[name] = exc

        def missing(task: luigi.Task) -> None:
            if (name := self.name(task)) is not None:
                self.missing.add(name)

        for event, handler in (
            (luigi.Event.DEPENDENCY_MISSING, missing),
            (luigi.Event.SUCCESS, ok),
            (luigi.Event.DEPENDENCY_PRESENT, ok),  # complete already (LogFiles: files there)
            (luigi.Event.FAILURE, bad),
            (luigi.Event.BROKEN_TASK, bad),
        ):
            luigi.Task.event_handler(event)(handler)
            self._handlers.append((event, handler))
        return self

    def __exit__(self, *exc: object) -> None:
        callbacks = luigi.Task._event_callbacks[luigi.Task]
        for event, handler in self._handlers:
            callbacks[event].discard(handler)


@pytest.fixture(scope="module")
def fakes(tiny_world: Path) -> Iterator[dict[str, str]]:
    """The world's fake Graph API and MMP on loopback ports: {'graph': url, 'mmp': url}."""
    from adperf.sandbox.world import load_meta

    graph, mmp, _google, *_more = resources.sandbox_fakes(tiny_world, load_meta(tiny_world))
    urls = {"graph": graph.start(), "mmp": mmp.start()}
    try:
        yield urls
    finally:
        graph.stop()
        mmp.stop()


def production(root: Path, world: Path, fakes: dict[str, str]) -> dict[str, dict[str, str]]:
    """Every source of a production config, pointing at the local world and fakes."""
    from adperf.sandbox.world import load_meta

    meta = load_meta(world)
    return {
        "adperf": {
            "sandbox": "false",
            "data_root": str(root / "lake"),
            "warehouse_url": f"sqlite:///{root / 'warehouse.db'}",
            "report_timezone": "Asia/Seoul",
            "report_currency": "USD",
        },
        "facebook": {
            "graph_url": fakes["graph"],
            "ad_account_ids": ",".join(a["account_id"] for a in meta["facebook_accounts"]),
        },
        "google_ads": {
            "endpoint": "googleads.googleapis.com",
            "customer_ids": ",".join(c["customer_id"] for c in meta["google_ads_customers"]),
        },
        "mmp": {"base_url": fakes["mmp"], "app_ids": ",".join(meta["apps"])},
        "payments": {"url": f"sqlite:///{world / 'payments.sqlite'}"},
        "logs": {"path": str(world / "logs" / "{date}.jsonl.gz")},
        "fx": {"rates_path": str(world / "fx.csv")},
    }


@pytest.fixture()
def prod_root(tmp_path: Path, tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path as the lake/warehouse root; the config's values are restored afterwards."""
    for name in [k for k in __import__("os").environ if k.startswith("ADPERF_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ADPERF_HMAC_KEY", "source-config-test-" + "k" * 32)
    monkeypatch.setenv("ADPERF_FACEBOOK_TOKEN", config.SANDBOX_FACEBOOK_TOKEN)
    monkeypatch.setenv("ADPERF_MMP_TOKEN", config.SANDBOX_MMP_TOKEN)
    cfg = luigi.configuration.get_config()
    sections = ("adperf", "facebook", "google_ads", "mmp", "payments", "logs", "fx", "slack")
    saved = {s: dict(cfg.items(s)) if cfg.has_section(s) else None for s in sections}
    try:
        yield tmp_path
    finally:
        for section, before in saved.items():
            if cfg.has_section(section):
                cfg.remove_section(section)
            if before is not None:
                cfg.add_section(section)
                for key, value in before.items():
                    cfg.set(section, key, value)
        Register.clear_instance_cache()


def run_sources(root: Path, world: Path, fakes: dict[str, str], without: str | None) -> Outcomes:
    """Build every source's task under the production config, one key emptied."""
    values = production(root, world, fakes)
    if without is not None:
        section, option, _, _ = MISSING[without]
        values[section][option] = ""
    configure(root, **values)  # type: ignore[arg-type]
    with Outcomes() as outcomes:
        luigi.build(list(TASKS.values()), local_scheduler=True, workers=1)
    return outcomes


def test_a_complete_production_config_runs_every_source(
    prod_root: Path, tiny_world: Path, fakes: dict[str, str]
) -> None:
    outcomes = run_sources(prod_root, tiny_world, fakes, None)
    assert outcomes.succeeded == set(TASKS) - {"AdSpend(google_ads)"}
    assert set(outcomes.failed) == {"AdSpend(google_ads)"} and not outcomes.missing
    assert GOOGLE_NO_TOKEN in str(outcomes.failed["AdSpend(google_ads)"])


@pytest.mark.parametrize("missing", list(MISSING))
def test_a_missing_key_fails_exactly_the_tasks_of_its_source(
    prod_root: Path, tiny_world: Path, fakes: dict[str, str], missing: str
) -> None:
    _, _, key, expected = MISSING[missing]
    outcomes = run_sources(prod_root, tiny_world, fakes, missing)
    named = {n for n, exc in outcomes.failed.items() if key in str(exc)}
    if expected == {"LogFiles"}:
        # luigi passes no exception with a failed complete(): ask it again.
        assert outcomes.missing == {"LogFiles"}
        with pytest.raises(ConfigError) as raised:
            TASKS["LogFiles"].complete()
        named = {"LogFiles"} if key in str(raised.value) else set()
        failed = {"LogFiles": raised.value}
        # Alerted as a failure naming the key, not as 'logs not there yet'.
        sent = [(x["kind"], x["error_class"], x["message"]) for x in ops.flush_alerts()]
        assert ("failed", "ConfigError", str(raised.value)) in sent, sent
        assert not [x for x in sent if x[0] == "not_ready"]
    else:
        assert not outcomes.missing
        failed = outcomes.failed
    assert named == expected, outcomes.failed
    for name in expected:
        exc = failed[name]
        assert isinstance(exc, ConfigError)
        assert str(exc).startswith(f"{key} is not set. Fix: set it in luigi.cfg"), exc
    # Every other source still ran: a task downstream of a failed one (EventLogs after
    # LogFiles) is not run; Google Ads fails on its token as with the complete config.
    blocked = {"EventLogs"} if "LogFiles" in expected else set()
    others = set(TASKS) - expected - blocked - {"AdSpend(google_ads)"}
    assert outcomes.succeeded == others, outcomes.failed
    if "AdSpend(google_ads)" not in expected:
        assert GOOGLE_NO_TOKEN in str(outcomes.failed["AdSpend(google_ads)"])
    assert set(outcomes.failed) <= expected | {"AdSpend(google_ads)"}


def test_payments_url_from_the_environment_is_enough(
    prod_root: Path, tiny_world: Path, fakes: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADPERF_PAYMENTS_URL", f"sqlite:///{tiny_world / 'payments.sqlite'}")
    outcomes = run_sources(prod_root, tiny_world, fakes, "payments url")
    assert "Payments" in outcomes.succeeded


def test_slack_base_url_is_asked_for_only_by_whoever_posts(
    prod_root: Path, tiny_world: Path, fakes: dict[str, str]
) -> None:
    values = production(prod_root, tiny_world, fakes)
    configure(prod_root, **values, slack={"base_url": ""})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^\[slack\] base_url is not set"):
        resources.slack_base_url(END)
    # Every source still resolves.
    assert resources.payments_url(END) and resources.logs_path(END)
    assert resources.fx_rates_path(END) and resources.mmp(END).app_ids
    assert resources.facebook(END).account_ids and resources.google_ads(END).customer_ids
