"""Operating the pipeline through luigi events: a `pipeline_runs` row per task run, and one
alert per task that ends a run failed (or waiting for data), never one per retry.

Luigi fires START/SUCCESS/FAILURE in the process that runs the task (a forked child when
workers > 1) and DEPENDENCY_* in the scheduling process (luigi/worker.py). Failures are
therefore spooled to files, one per task and run (a retry overwrites, a later success deletes),
and the scheduling process sends what is left when it exits: after luigi has decided the run.
A run killed before that leaves its spool behind: the next run (and `adperf status`) sends it.

Two small changes to luigi 3.8.1 make a worker that cooperates with others on one luigid end
with the outcome of the work it asked for (see `_install_luigi_patches`).
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
import luigi.execution_summary
import luigi.scheduler
import luigi.worker
import psutil
import sqlalchemy as sa
from luigi.task import flatten

from adperf import atomic, warehouse
from adperf.errors import AdperfError
from adperf.ops import build_alert_message, scrub
from tasks import config
from tasks.targets import JsonFile, LakePartition

log = logging.getLogger("luigi-interface")

_STARTED = "_adperf_started"
_flush_dirs: set[Path] = set()
_flush_registered: list[bool] = []
_stale_checked: set[Path] = set()
_engines: dict[tuple[str, int], sa.Engine] = {}


class alerts(luigi.Config):  # noqa: N801 - section names are lowercase
    enabled = luigi.BoolParameter(default=True, description="alert on tasks that end failed")
    channel = luigi.Parameter(
        default="", description="Slack channel of alerts (default: [slack] channel)"
    )
    stale_after_hours = luigi.FloatParameter(
        default=24.0,
        description="a pending alert of a run on another host (whose process cannot be checked) "
        "is sent by the next run once it is this old; on this host, as soon as the run is gone",
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


def _on_start(task: luigi.Task) -> None:
    setattr(task, _STARTED, (dt.datetime.now(dt.UTC).replace(tzinfo=None), time.monotonic()))


def _on_success(task: luigi.Task) -> None:
    _record(task, "DONE", None)
    (spool_dir() / f"failed-{task.task_id}.json").unlink(missing_ok=True)


def _on_failure(task: luigi.Task, exc: BaseException) -> None:
    _record(task, "FAILED", type(exc).__name__)
    _spool(task, "failed", type(exc).__name__, str(exc))


def _on_process_failure(task: luigi.Task, error_msg: str) -> None:
    _spool(task, "failed", "ProcessFailure", error_msg)


def _on_timeout(task: luigi.Task, error_msg: str) -> None:
    _spool(task, "failed", "Timeout", error_msg)


def _on_missing(task: luigi.Task) -> None:
    _register_flush()
    if not isinstance(task, luigi.ExternalTask):
        return
    # luigi fires DEPENDENCY_MISSING also when complete() raised: an external input that cannot
    # even say where it is (LogFiles without [logs] path) is a config failure, not missing data.
    try:
        task.output()
    except AdperfError as exc:
        _spool(task, "failed", type(exc).__name__, str(exc))
        return
    _spool(task, "not_ready", "DataNotReady", _not_ready_text(task))


def _on_broken(task: luigi.Task, exc: BaseException) -> None:
    """requires() raised (a task whose inputs cannot even be named): alerted as a failure."""
    _register_flush()
    _spool(task, "failed", type(exc).__name__, str(exc))


def _on_discovered(task: luigi.Task, dependency: luigi.Task) -> None:
    _register_flush()


def _on_present(task: luigi.Task) -> None:
    _register_flush()  # a run with nothing to do still sends what killed runs left behind


# Registered by a call, not as decorators: to mypy luigi is untyped (pyproject.toml), and an
# untyped decorator would make each handler untyped.
for _event, _handler in (
    (luigi.Event.START, _on_start),
    (luigi.Event.SUCCESS, _on_success),
    (luigi.Event.FAILURE, _on_failure),
    (luigi.Event.PROCESS_FAILURE, _on_process_failure),
    (luigi.Event.TIMEOUT, _on_timeout),
    (luigi.Event.DEPENDENCY_MISSING, _on_missing),
    (luigi.Event.BROKEN_TASK, _on_broken),
    (luigi.Event.DEPENDENCY_DISCOVERED, _on_discovered),
    (luigi.Event.DEPENDENCY_PRESENT, _on_present),
):
    luigi.Task.event_handler(_event)(_handler)


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
    warehouse.record_pipeline_run(_engine(config.adperf().warehouse_url), row)


def _engine(url: str) -> sa.Engine:
    """One engine per warehouse URL and process for the pipeline_runs rows: a new engine per
    task cost a connect and a dispose on every success. Per process: a forked worker must not
    use its parent's pooled connections."""
    key = (url, os.getpid())
    if key not in _engines:
        _engines[key] = warehouse.make_engine(url)
    return _engines[key]


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
        measured = t.size() if isinstance(t, LakePartition) else None
        if measured is not None:
            rows, size, known = rows + measured[0], size + measured[1], True
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
    explain = getattr(task, "waiting_for", None)  # MmpReady: the source's own answer
    if callable(explain):
        return str(explain())
    return f"{task.task_family}: the input does not exist yet ({task.output()!r})"


def _register_flush() -> None:
    """In the scheduling process: send this run's alerts when the process exits, and (once)
    the alerts that dead runs left behind."""
    if multiprocessing.parent_process() is not None:
        return
    _flush_dirs.add(spool_dir())
    if not _flush_registered:
        _flush_registered.append(True)
        atexit.register(_flush_at_exit)
    if alerts_dir() not in _stale_checked:
        _stale_checked.add(alerts_dir())
        try:
            flush_stale_spools()
        except AdperfError as exc:
            # Delivery is retried by the next run (the entries stay); this run goes on.
            log.error("adperf alerts: could not send (%s)", scrub(str(exc), _secret_values()))


def _flush_at_exit() -> None:
    for folder in sorted(_flush_dirs):
        try:
            flush_alerts(folder)
        except AdperfError as exc:
            # The run is over and its exit code is set; an unsendable alert must not change it.
            log.error("adperf alerts: could not send (%s)", scrub(str(exc), _secret_values()))


def flush_alerts(folder: Path | None = None, *, stale: bool = False) -> list[dict[str, Any]]:
    """Send one alert per task left in the spool (failed, or still waiting for data); return
    the alert entries sent. A 'not ready' input that has appeared since is dropped; so is,
    in the spool of a dead run (`stale`), a failed task that a later run completed."""
    folder = folder or spool_dir()
    sent: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        # Claim the entry (rename is atomic): two runs flushing one dead spool send it once.
        claimed = path.with_name(f"{path.name}.sending-{run_id()}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            continue
        entry = json.loads(claimed.read_text())
        if (entry["kind"] == "not_ready" or stale) and _now_complete(entry):
            claimed.unlink()
            continue
        try:
            _deliver(entry, folder.parent.parent)
        except BaseException:
            os.replace(claimed, path)  # unsent: back in the spool for the next flush
            raise
        claimed.unlink()
        sent.append(entry)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return sent


def flush_stale_spools(root: Path | None = None) -> list[dict[str, Any]]:
    """Send the alerts spooled by runs that ended without sending them (a SIGKILLed scheduling
    process): its process is gone (this host), or it wrote nothing for [alerts]
    stale_after_hours (another host). Entries a dead sender claimed are sent again."""
    root = root or alerts_dir() / ".spool"
    sent: list[dict[str, Any]] = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.name == run_id() or not _run_is_gone(folder):
            continue
        for claimed in folder.glob("*.json.sending-*"):
            if not _owner_alive(claimed.name.rsplit(".sending-", 1)[1], claimed):
                os.replace(claimed, claimed.with_name(claimed.name.rsplit(".sending-", 1)[0]))
        for torn in folder.glob(".*.tmp-*"):  # a write the kill interrupted (_write_json)
            torn.unlink()
        sent += flush_alerts(folder, stale=True)
    return sent


def _run_is_gone(folder: Path) -> bool:
    return not _owner_alive(folder.name, folder)


def _owner_alive(owner: str, path: Path) -> bool:
    """Whether the run `<host>-<pid>` that wrote `path` may still be running."""
    host, _, pid = owner.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit():
        newest = max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.glob("*")])
        return time.time() - newest < float(alerts().stale_after_hours) * 3600
    try:
        started = float(psutil.Process(int(pid)).create_time())
    except psutil.NoSuchProcess:
        return False
    # A pid the kernel gave to a newer process since is not the run that wrote the spool
    # (ctime: the spool's last entry written or renamed, by that run once it had started).
    return started <= path.stat().st_ctime + 1.0


def _now_complete(entry: dict[str, Any]) -> bool:
    """Whether the entry's task is complete now (its data arrived, or a later run redid it)."""
    from luigi.task_register import TaskClassException, load_task

    try:
        return bool(load_task(entry["module"], entry["task"], entry["params"]).complete())
    except (ImportError, TaskClassException, AdperfError):
        return False  # cannot tell (task gone, config broken): the alert is sent


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
    atomic.write_json(path, payload, indent=1, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------- cooperating workers
# luigi 3.8.1 judges a run by what its own process did (luigi/execution_summary.py): a task that
# another worker on the same luigid ran is "run by another worker" ([retcode] already_running)
# or left "pending" (not_run) even once it is complete, and a keep_alive worker leaves as soon
# as nothing is PENDING for it, while tasks it asked for may still be RUNNING elsewhere
# (scheduler.count_pending counts PENDING and FAILED only). So a process whose share another
# process took exited 10 or 25 although nothing failed. Two patches, installed on import:
#  1. a keep_alive worker also waits while another worker runs one of its tasks;
#  2. the summary (and so the exit code) counts a task that is complete when the run ends as
#     done, whoever ran it. A task still running elsewhere when a worker without keep_alive
#     leaves stays "run by another worker" (10): its outcome is not known to this process.
# luigi's own pid lock (`--lock-pid-dir`, two identical commands) still exits 10 (interface.py).

_luigi_keep_alive = luigi.worker.Worker._keep_alive


def _keep_alive(worker: luigi.worker.Worker, response: Any) -> bool:
    if _luigi_keep_alive(worker, response):
        return True
    others = [t for t in response.running_tasks if t.get("worker") != worker._id]
    return bool(worker._config.keep_alive and not worker._stop_requesting_work and others)


def _summary_dict(worker: luigi.worker.Worker) -> dict[str, set[luigi.Task]]:
    # luigi.execution_summary._summary_dict, with the tasks completed elsewhere taken out of
    # the pending and run-by-other-worker sets before the pending ones are explained.
    es = luigi.execution_summary
    set_tasks: dict[str, set[luigi.Task]] = es._partition_tasks(worker)
    set_tasks["run_by_other_worker"] = es._get_run_by_other_worker(worker)
    done = _completed_elsewhere(
        worker, set_tasks["still_pending_not_ext"] | set_tasks["run_by_other_worker"]
    )
    if done:
        log.info(
            "%d task(s) were completed by another worker: %s", len(done), sorted(map(str, done))
        )
        set_tasks["still_pending_not_ext"] -= done
        set_tasks["run_by_other_worker"] -= done
        set_tasks["already_done"] |= done
    es._populate_unknown_statuses(set_tasks)
    return set_tasks


def _completed_elsewhere(worker: luigi.worker.Worker, tasks: set[luigi.Task]) -> set[luigi.Task]:
    if not tasks or isinstance(worker._scheduler, luigi.scheduler.Scheduler):
        return set()  # an in-process scheduler has no other worker: nothing was done elsewhere
    done = set()
    for task in tasks:
        if isinstance(task, luigi.ExternalTask):
            continue  # an input is missing data or present, never "run" by anyone
        try:
            if task.complete():
                done.add(task)
        except Exception:  # noqa: BLE001 - a complete() that raises keeps luigi's own verdict
            continue
    return done


def _install_luigi_patches() -> None:
    luigi.worker.Worker._keep_alive = _keep_alive
    luigi.execution_summary._summary_dict = _summary_dict


_install_luigi_patches()
