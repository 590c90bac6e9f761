"""Operating the pipeline through luigi events: a `pipeline_runs` row per task run, and one
alert per task that ends a run failed (or waiting for data), never one per retry.

Luigi fires START/SUCCESS/FAILURE in the process that runs the task (a forked child when
workers > 1) and DEPENDENCY_* in the scheduling process (luigi/worker.py). Failures are
therefore spooled to files, one per task and run (a retry overwrites, a later success deletes),
and the scheduling process sends what is left when it exits: after luigi has decided the run.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import multiprocessing
import os
import socket
import time
from pathlib import Path
from typing import Any

import luigi
from luigi.task import flatten

from adperf import warehouse
from adperf.errors import AdperfError
from adperf.ops import build_alert_message, scrub
from tasks import config
from tasks.targets import JsonFile, LakePartition

log = logging.getLogger("luigi-interface")

_STARTED = "_adperf_started"
_flush_dirs: set[Path] = set()
_flush_registered: list[bool] = []


class alerts(luigi.Config):  # noqa: N801 - section names are lowercase
    enabled = luigi.BoolParameter(default=True, description="alert on tasks that end failed")
    channel = luigi.Parameter(
        default="", description="Slack channel of alerts (default: [slack] channel)"
    )


class monitoring(luigi.Config):  # noqa: N801
    enabled = luigi.BoolParameter(
        default=True, description="record every task run in the warehouse table pipeline_runs"
    )


def run_id() -> str:
    """This run: the host and pid of the scheduling process (shared by its forked workers)."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None else os.getpid()
    return f"{socket.gethostname()}-{pid}"


def spool_dir() -> Path:
    """Where this run's pending alerts wait until the run ends."""
    return alerts_dir() / ".spool" / run_id()


def alerts_dir() -> Path:
    """Alerts go here as JSON files when there is no Slack token: beside the report outbox."""
    return Path(config.slack().outbox).parent / "alerts"


# ---------------------------------------------------------------- event handlers


@luigi.Task.event_handler(luigi.Event.START)
def _on_start(task: luigi.Task) -> None:
    setattr(task, _STARTED, (dt.datetime.now(dt.UTC).replace(tzinfo=None), time.monotonic()))


@luigi.Task.event_handler(luigi.Event.SUCCESS)
def _on_success(task: luigi.Task) -> None:
    _record(task, "DONE", None)
    (spool_dir() / f"failed-{task.task_id}.json").unlink(missing_ok=True)


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _on_failure(task: luigi.Task, exc: BaseException) -> None:
    _record(task, "FAILED", type(exc).__name__)
    _spool(task, "failed", type(exc).__name__, str(exc))


@luigi.Task.event_handler(luigi.Event.PROCESS_FAILURE)
def _on_process_failure(task: luigi.Task, error_msg: str) -> None:
    _spool(task, "failed", "ProcessFailure", error_msg)


@luigi.Task.event_handler(luigi.Event.TIMEOUT)
def _on_timeout(task: luigi.Task, error_msg: str) -> None:
    _spool(task, "failed", "Timeout", error_msg)


@luigi.Task.event_handler(luigi.Event.DEPENDENCY_MISSING)
def _on_missing(task: luigi.Task) -> None:
    _register_flush()
    if isinstance(task, luigi.ExternalTask):
        _spool(task, "not_ready", "DataNotReady", _not_ready_text(task))


@luigi.Task.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)
def _on_discovered(task: luigi.Task, dependency: luigi.Task) -> None:
    _register_flush()


# ---------------------------------------------------------------- monitoring


def _record(task: luigi.Task, status: str, error_class: str | None) -> None:
    """Append a pipeline_runs row for one run of one adperf task."""
    if not task.task_module.startswith("tasks") or isinstance(task, luigi.ExternalTask):
        return
    if not monitoring().enabled:
        return
    started_at, t0 = getattr(task, _STARTED, (dt.datetime.now(dt.UTC).replace(tzinfo=None), None))
    duration = time.monotonic() - t0 if t0 is not None else 0.0
    rows_out, bytes_out = _measure(flatten(task.output())) if status == "DONE" else (None, None)
    rows_in, _ = _measure(_input_targets(task))
    row = {
        "run_id": run_id(),
        "task_id": task.task_id,
        "family": task.task_family,
        "day": _day_of(task),
        "status": status,
        "started_at": started_at,
        "duration_s": round(duration, 3),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "bytes_out": bytes_out,
        "error_class": error_class,
    }
    engine = warehouse.make_engine(config.adperf().warehouse_url)
    try:
        warehouse.record_pipeline_run(engine, row)
    finally:
        engine.dispose()


def _input_targets(task: luigi.Task) -> list[luigi.Target]:
    """The outputs a task reads, looking through wrapper tasks (InstallHistory & co.)."""
    targets: list[luigi.Target] = []
    for dep in flatten(task.requires()):
        if isinstance(dep, luigi.WrapperTask):
            targets += _input_targets(dep)
        elif not isinstance(dep, luigi.ExternalTask):
            targets += flatten(dep.output())
    return targets


def _measure(targets: list[luigi.Target]) -> tuple[int | None, int | None]:
    """Rows (from lake _meta.json) and bytes of the targets that exist; None if unknowable."""
    rows = size = 0
    known = False
    for t in targets:
        if isinstance(t, LakePartition) and t.exists():
            rows += int(t.meta().get("rows", 0))
            size += sum(f.stat().st_size for f in t.path.iterdir() if f.is_file())
            known = True
        elif isinstance(t, JsonFile) and t.exists():
            size += t.path.stat().st_size
            known = True
    return (rows, size) if known else (None, None)


def _day_of(task: luigi.Task) -> dt.date | None:
    value = getattr(task, "date", None) or getattr(task, "month", None)
    return value if isinstance(value, dt.date) else None


# ---------------------------------------------------------------- alerts


def _spool(task: luigi.Task, kind: str, error_class: str, message: str) -> None:
    """Keep the latest failure (or wait) of a task in this run's spool, attempts counted."""
    if not alerts().enabled:
        return
    path = spool_dir() / f"{kind}-{task.task_id}.json"
    attempts = 1
    if path.is_file():
        attempts += int(json.loads(path.read_text()).get("attempts", 1))
    day = _day_of(task) or getattr(task, "day", None)
    entry = {
        "kind": kind,
        "task": task.task_family,
        "task_id": task.task_id,
        "module": task.task_module,
        "params": task.to_str_params(),
        "day": str(day) if day else None,
        "error_class": error_class,
        "message": scrub(message, _secret_values()),
        "attempts": attempts,
    }
    _write_json(path, entry)


def _not_ready_text(task: luigi.Task) -> str:
    if getattr(task, "source", None):
        return f"{task.source} has not published {task.day} yet"  # type: ignore[attr-defined]
    return f"{task.task_family}: the input does not exist yet ({task.output()!r})"


def _register_flush() -> None:
    """In the scheduling process: send this run's alerts when the process exits."""
    if multiprocessing.parent_process() is not None:
        return
    _flush_dirs.add(spool_dir())
    if not _flush_registered:
        _flush_registered.append(True)
        atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    for folder in sorted(_flush_dirs):
        try:
            flush_alerts(folder)
        except AdperfError as exc:
            # The run is over and its exit code is set; an unsendable alert must not change it.
            log.error("adperf alerts: could not send (%s)", scrub(str(exc), _secret_values()))


def flush_alerts(folder: Path | None = None) -> list[dict[str, Any]]:
    """Send one alert per task left in the spool (failed, or still waiting for data); return
    the alert entries sent. A 'not ready' input that has appeared since is dropped."""
    from luigi.task_register import load_task

    folder = folder or spool_dir()
    sent: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = json.loads(path.read_text())
        if entry["kind"] == "not_ready":
            waiting = load_task(entry["module"], entry["task"], entry["params"])
            if waiting.complete():
                path.unlink()
                continue
        _deliver(entry, folder.parent.parent)
        path.unlink()
        sent.append(entry)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return sent


def _deliver(entry: dict[str, Any], outbox: Path) -> None:
    """To Slack with a token, else to `<outbox>/alert-<day>-<task id>.json`."""
    message = build_alert_message(
        kind=entry["kind"],
        task=entry["task"],
        day=entry["day"],
        error_class=entry["error_class"],
        message=entry["message"],
        attempts=entry["attempts"],
    )
    token = os.environ.get("ADPERF_SLACK_TOKEN", "")
    if token:
        from adperf.sinks.slack import post_message

        post_message(
            message,
            token=token,
            channel=alerts().channel or config.slack().channel,
            base_url=config.slack().base_url,
            day=entry["day"],
        )
        return
    _write_json(outbox / f"alert-{entry['day'] or 'none'}-{entry['task_id']}.json", message)


def _secret_values() -> list[str]:
    """Every secret this process could know: environment secrets and the sandbox's."""
    values = [v for k, v in os.environ.items() if k.startswith("ADPERF_") and v]
    sandbox = [config.SANDBOX_HMAC_KEY, config.SANDBOX_FACEBOOK_TOKEN, config.SANDBOX_MMP_TOKEN]
    return values + sandbox


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, sort_keys=True, ensure_ascii=False, indent=1))
    os.replace(tmp, path)
