"""Long `adperf` commands on a terminal: one progress line instead of luigi's log flood.

luigi's log (DEBUG by default: ~1,300 lines for one cold day) goes to a file under
`<data_root>/../log/` (`var/log/` by default, beside the lake as cron's `adperf-cron.log`);
`-v` also sends it to the terminal. The progress of a run is read from the worker's calls to its
scheduler (`add_task`: each task's status when scheduled and when it ends; `get_work`: the task
it starts), which all happen in the scheduling process however many workers luigi forks: the
START/SUCCESS events fire in the forked child instead (luigi/worker.py, TaskProcess.run).

On a terminal the line is redrawn in place (`\\r`, cut to the terminal's width); otherwise (cron,
CI, a pipe) a few plain lines: the start, what there is to do, one line every `interval` seconds,
the end. A failed task's error, inputs that are not there yet and tasks whose completeness could
not be checked are printed either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import luigi
import luigi.interface
import luigi.retcodes
import luigi.rpc
import luigi.scheduler
import luigi.worker
from luigi.execution_summary import LuigiRunResult, LuigiStatusCode
from luigi.task_status import DONE, FAILED, PENDING, UNKNOWN

LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
TERMINAL_FORMAT = "%(levelname)s: %(message)s"  # luigi's own, for -v
PLAIN_INTERVAL_S = 10.0
_TICK_S = 0.25
_BAR = 20
_MAX_ERROR_LINES = 12


# ---------------------------------------------------------------- the log file


def log_path(command: str, data_root: str, now: dt.datetime | None = None) -> Path:
    """`<data_root>/../log/adperf-<command>-YYYYmmdd-HHMMSS.log` (var/log/ for the default
    var/lake, and for a lake in object storage)."""
    folder = Path("var") if "://" in data_root else Path(data_root).parent
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return folder / "log" / f"adperf-{command}-{stamp}.log"


@contextlib.contextmanager
def luigi_log(path: Path, *, verbose: bool) -> Iterator[Path]:
    """Send luigi's log (and Python warnings, and other libraries' warnings) to `path`, and
    with `verbose` to stderr too, as luigi would; restore logging afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    handlers[0].setFormatter(logging.Formatter(LOG_FORMAT))
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[1].setFormatter(logging.Formatter(TERMINAL_FORMAT))
    root = logging.getLogger()
    levels = {
        "luigi-interface": luigi.interface.core().log_level,
        "luigi": "INFO",
        "adperf": "INFO",
        "tasks": "INFO",
    }
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    logging.captureWarnings(True)
    # luigi.build would add its own stderr handler (DEBUG) to luigi-interface otherwise.
    cfg = luigi.configuration.get_config()
    before = cfg.get("core", "no_configure_logging", None)
    cfg.set("core", "no_configure_logging", "true")
    try:
        yield path
    finally:
        if before is None:
            cfg.remove_option("core", "no_configure_logging")
        else:
            cfg.set("core", "no_configure_logging", before)
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# ---------------------------------------------------------------- progress


class Progress:
    """Tasks to run, done, failed and running in one luigi run, drawn on `stream`."""

    def __init__(
        self,
        title: str,
        stream: TextIO,
        *,
        tty: bool | None = None,
        interval: float = PLAIN_INTERVAL_S,
        unit: str = "task",
    ) -> None:
        self.title = title
        self.stream = stream
        self.tty = _isatty(stream) if tty is None else tty
        self.interval = interval
        self.unit = unit  # what is counted: luigi tasks, or e.g. the changes of actions apply
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._last_plain = self._t0
        self._plain_done = 0  # tasks ended at the last plain line
        self._first: dict[str, str] = {}  # task id -> todo / complete / waiting / broken
        self._running: dict[str, str] = {}  # task id -> name, in the order started
        self._done: set[str] = set()
        self._failed: set[str] = set()
        self._explained = 0  # scheduling errors shown, whose UNKNOWN status is still to come
        self._checking = True
        self._drawn = ""  # the line on the terminal now
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # counts --------------------------------------------------------------

    @property
    def total(self) -> int:
        todo = sum(1 for s in self._first.values() if s == "todo")
        return max(todo, len(self._done | self._failed))

    @property
    def done(self) -> int:
        return len(self._done)

    @property
    def failed(self) -> int:
        return len(self._failed)

    @property
    def complete_before(self) -> int:
        return sum(1 for s in self._first.values() if s == "complete")

    # what the scheduler is told ----------------------------------------------

    def added(self, kwargs: dict[str, Any]) -> None:
        """The worker told the scheduler a task's status (scheduling it, or its result)."""
        if os.getpid() != self._pid:
            return  # a forked worker's copy: the scheduling process keeps the count
        task_id, status = kwargs.get("task_id"), kwargs.get("status", PENDING)
        if not isinstance(task_id, str):
            return
        name = _name(kwargs.get("family", ""), kwargs.get("params"))
        with self._lock:
            if task_id in self._running:
                del self._running[task_id]
                if status == DONE:
                    self._done.add(task_id)
                    self._failed.discard(task_id)
                elif status == FAILED:
                    self._failed.add(task_id)
                    if kwargs.get("expl") is not None:
                        self._say(f"FAILED {name}: {error_text(kwargs['expl'])}")
            elif task_id not in self._first:
                self._first[task_id] = _first_state(status, kwargs.get("runnable"))
                if self._first[task_id] == "waiting":
                    self._say(f"waiting for data: {name} is not there yet")
                elif self._first[task_id] == "broken":
                    if self._explained:
                        self._explained -= 1  # luigi logged the error just before (worker._add)
                    else:
                        self._say(f"could not schedule {name}: its check raised (see the log)")
            self._draw()

    def scheduling_error(self, name: str, traceback: str) -> None:
        """luigi will not run a task: its complete() or requires() raised this."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            self._explained += 1
            self._say(f"could not schedule {name}: {error_text(traceback)}")

    def got_work(self, reply: dict[str, Any]) -> None:
        """The scheduler handed the worker a task to run (or nothing)."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            if self._checking:
                self._checking = False
                if not self.tty:
                    self._line(f"{self._n(self.total)} to run{self._complete_text()}")
            task_id = reply.get("task_id")
            if isinstance(task_id, str):
                self._running[task_id] = _name(
                    reply.get("task_family", ""), reply.get("task_params")
                )
            self._draw()

    # drawing ----------------------------------------------------------------

    def start(self, log: Path | None = None) -> None:
        where = f" (luigi log: {log})" if log else ""
        self._line(f"{self.title}: started{where}")
        self._ticker = threading.Thread(target=self._tick, name="adperf-progress", daemon=True)
        self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self._clear()
            failed = f", {self.failed} failed" if self.failed else ""
            self._line(
                f"{self.title}: {self.done}/{self._n(self.total)} done{failed}"
                f"{self._complete_text()} in {_clock(self.elapsed)}"
            )

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def status_line(self, width: int) -> str:
        """The line drawn on a terminal, at most `width` characters."""
        if self._checking:
            text = f"{self.title}: checking {self._n(len(self._first))}  {_clock(self.elapsed)}"
        else:
            total = max(self.total, 1)
            filled = round(_BAR * (self.done + self.failed) / total)
            bar = "#" * filled + "-" * (_BAR - filled)
            failed = f" {self.failed} failed" if self.failed else ""
            text = (
                f"[{bar}] {self.done}/{self._n(self.total)}{failed}  {_clock(self.elapsed)}  "
                f"{self._running_text()}"
            )
        return text[: max(width, 10)]

    def _n(self, n: int) -> str:
        return f"{n} {self.unit}" if n == 1 else f"{n} {self.unit}s"

    def _complete_text(self) -> str:
        return f" ({self.complete_before} complete already)" if self.complete_before else ""

    def _running_text(self) -> str:
        names = list(self._running.values())
        if not names:
            return ""
        return names[-1] + (f" (+{len(names) - 1} running)" if len(names) > 1 else "")

    def _tick(self) -> None:
        while not self._stop.wait(_TICK_S):
            # No fork while this thread writes: a forked worker would inherit a held lock.
            with luigi.worker.fork_lock, self._lock:
                if self.tty:
                    self._draw()
                elif self._plain_due():
                    self._plain_done = self.done + self.failed
                    self._line(
                        f"{_clock(self.elapsed)}  {self.done}/{self._n(self.total)} done"
                        + (f", {self.failed} failed" if self.failed else "")
                        + (f", running {self._running_text()}" if self._running else "")
                    )

    def _plain_due(self) -> bool:
        """A plain line every `interval` seconds once a tenth of the tasks more have ended, and
        at least every 6 intervals: a dozen lines for a run of any length, plus one a minute."""
        since = time.monotonic() - self._last_plain
        if self._checking or since < self.interval:
            return False
        moved = self.done + self.failed - self._plain_done
        return moved * 10 >= self.total or since >= 6 * self.interval

    def _draw(self) -> None:
        if not self.tty:
            return
        line = self.status_line(_width(self.stream) - 1)
        if line != self._drawn:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._drawn = line

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = ""

    def _say(self, text: str) -> None:
        """A message that stays (an error, a wait): above the progress line on a terminal."""
        self._clear()
        self._line(text)
        self._draw()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_plain = time.monotonic()


def error_text(expl: object) -> str:
    """The exception lines of a failed task's explanation (luigi sends the traceback)."""
    if isinstance(expl, str):
        with contextlib.suppress(ValueError):
            expl = json.loads(expl)
    text = str(expl or "").rstrip()
    lines = text.splitlines()
    indented = [i for i, line in enumerate(lines) if line.startswith((" ", "\t"))]
    tail = lines[indented[-1] + 1 :] if indented else lines
    tail = [line for line in tail if line.strip()] or lines[-1:]
    if len(tail) > _MAX_ERROR_LINES:
        tail = tail[:_MAX_ERROR_LINES] + ["(more in the log)"]
    return "\n  ".join(tail)


def _first_state(status: str, runnable: object) -> str:
    if status == DONE:
        return "complete"
    if status == UNKNOWN:
        return "broken"
    if status == PENDING:
        return "todo" if runnable else "waiting"
    return status.lower()  # DISABLED


def _name(family: object, params: object) -> str:
    if not isinstance(params, dict):
        return str(family)
    return f"{family}({', '.join(f'{k}={v}' for k, v in params.items())})"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or shutil.get_terminal_size().columns  # 0: a terminal that did not say


# ---------------------------------------------------------------- the luigi side


_WILL_NOT_RUN = re.compile(
    r"Will not run (.+?) or any dependencies due to error in \w+\(\) method:\n(.*)", re.DOTALL
)


class _SchedulingErrors(logging.Handler):
    """The error of a task luigi will not run because its complete() or requires() raised:
    luigi logs it (luigi/worker.py, _log_complete_error / _log_dependency_error) and tells the
    scheduler only UNKNOWN."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.WARNING)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        found = _WILL_NOT_RUN.match(record.getMessage())
        if found:
            self.progress.scheduling_error(found[1], found[2])


class _Observed:
    """The scheduler calls a worker makes, reported to a Progress (then made as usual)."""

    progress: Progress

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        self.progress.added(kwargs)
        return super().add_task(*args, **kwargs)  # type: ignore[misc]

    def get_work(self, *args: Any, **kwargs: Any) -> Any:
        reply = super().get_work(*args, **kwargs)  # type: ignore[misc]
        if isinstance(reply, dict):
            self.progress.got_work(reply)
        return reply


class _LocalScheduler(_Observed, luigi.scheduler.Scheduler):
    pass


class _RemoteScheduler(_Observed, luigi.rpc.RemoteScheduler):
    pass


class _Factory(luigi.interface._WorkerSchedulerFactory):
    """luigi.build's worker/scheduler factory, with schedulers that report to `progress`."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def create_local_scheduler(self) -> luigi.scheduler.Scheduler:
        sch = _LocalScheduler(prune_on_get_work=True, record_task_history=False)
        sch.progress = self.progress
        return sch

    def create_remote_scheduler(self, url: str) -> luigi.rpc.RemoteScheduler:
        sch = _RemoteScheduler(url)
        sch.progress = self.progress
        return sch


@dataclass(frozen=True)
class Outcome:
    result: LuigiRunResult
    code: int  # the process's exit code, by [retcode]
    log: Path

    @property
    def succeeded(self) -> bool:
        return bool(
            self.result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY)
        )


def build(
    tasks: list[luigi.Task],
    *,
    title: str,
    log: Path,
    verbose: bool = False,
    workers: int = 1,
    stream: TextIO | None = None,
    tty: bool | None = None,
    **env_params: Any,
) -> Outcome:
    """luigi.build(tasks) with its log in `log` and a progress line on `stream` (stderr); on a
    failed run, luigi's execution summary and the exit code follow it there."""
    stream = stream or sys.stderr
    progress = Progress(title, stream, tty=False if verbose else tty)
    errors = _SchedulingErrors(progress)
    with luigi_log(log, verbose=verbose):
        progress.start(log)
        logging.getLogger("luigi-interface").addHandler(errors)
        try:
            result = luigi.build(
                tasks,
                worker_scheduler_factory=_Factory(progress),
                workers=workers,
                detailed_summary=True,
                **{"local_scheduler": True, **env_params},
            )
        finally:
            logging.getLogger("luigi-interface").removeHandler(errors)
            progress.close()
    outcome = Outcome(result, exit_code(result), log)
    if not outcome.succeeded:
        stream.write(result.summary_text.strip("\n") + "\n")
        stream.write(f"{title}: {result.status.name}, exit code {outcome.code}; log: {log}\n")
        stream.flush()
    return outcome


def exit_code(result: LuigiRunResult) -> int:
    """The exit code `luigi` would give this run by [retcode] (never 0 for a run that did not
    succeed: luigi's own defaults are 0 for failed tasks and missing data)."""
    codes = luigi.retcodes.retcode()
    by_status = {
        LuigiStatusCode.SUCCESS: 0,
        LuigiStatusCode.SUCCESS_WITH_RETRY: 0,
        LuigiStatusCode.MISSING_EXT: codes.missing_data,
        LuigiStatusCode.FAILED: codes.task_failed,
        LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED: max(
            codes.task_failed, codes.scheduling_error
        ),
        LuigiStatusCode.SCHEDULING_FAILED: codes.scheduling_error,
        LuigiStatusCode.NOT_RUN: codes.not_run,
    }
    code = int(by_status.get(result.status, codes.unhandled_exception))
    if result.status in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        return 0
    return code or 1
