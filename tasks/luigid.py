"""`python -m tasks.luigid` (or `adperf luigid`): the central scheduler with state and history.

Runs luigi's own `luigid` (its flags: --background, --pidfile, --logdir, --state-path, --address,
--unix-socket, --port; so it can stand in for luigid under systemd) with task history turned on
(`[scheduler] record_task_history`, `[task_history] db_connection` or --history-db), after
loading a small compatibility shim: luigi 3.8.1's task-history code sends raw SQL strings,
which SQLAlchemy 2 refuses (`ObjectNotExecutableError: 'PRAGMA table_info(task_parameters);'`,
https://github.com/spotify/luigi/issues/3227, fixed on luigi's main branch but not released).
The shim replaces the one function that does so. History is on only here, not in luigi.cfg:
stock `luigid` reads luigi.cfg too, and would die at start with it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import luigi
import sqlalchemy as sa

log = logging.getLogger("luigi-interface")

DEFAULT_STATE_PATH = "var/luigi-state.pickle"
DEFAULT_HISTORY_URL = "sqlite:///var/luigi-task-history.db"


def install_task_history_shim() -> None:
    """Make luigi's DbTaskHistory work with SQLAlchemy 2 (idempotent)."""
    from luigi import db_task_history

    db_task_history._upgrade_schema = upgrade_task_history_schema


def upgrade_task_history_schema(engine: sa.Engine) -> None:
    """luigi's `db_task_history._upgrade_schema`, with SQL as `text()` and rows read by name.

    Same upgrades as luigi 3.8.1 (tasks.task_id; task_parameters.value as TEXT), in one
    transaction: under SQLAlchemy 2 a connection without commit rolls its statements back.
    """
    inspector = sa.inspect(engine)
    dialect = engine.dialect.name
    with engine.begin() as conn:
        if "task_id" not in [c["name"] for c in inspector.get_columns("tasks")]:
            log.warning("Upgrading DbTaskHistory schema: Adding tasks.task_id")
            conn.execute(sa.text("ALTER TABLE tasks ADD COLUMN task_id VARCHAR(200)"))
            conn.execute(sa.text("CREATE INDEX ix_task_id ON tasks (task_id)"))
        if "mysql" in dialect:
            conn.execute(sa.text("ALTER TABLE task_parameters MODIFY COLUMN value TEXT"))
        elif "postgresql" in dialect:
            value = [c for c in inspector.get_columns("task_parameters") if c["name"] == "value"]
            if str(value[0]["type"]) != "TEXT":
                conn.execute(sa.text("ALTER TABLE task_parameters ALTER COLUMN value TYPE TEXT"))
        elif "sqlite" in dialect:
            # SQLite cannot change a column type: an old database keeps VARCHAR (luigi warns too).
            rows = conn.execute(sa.text("PRAGMA table_info(task_parameters)")).mappings()
            if any(r["name"] == "value" and r["type"] != "TEXT" for r in rows):
                log.warning("SQLite can not change column types: use a new task history database")
        else:
            log.warning("Task history on %s: task_parameters.value not migrated to TEXT", dialect)


def configure_scheduler(state_path: str | None, history_url: str | None) -> dict[str, str]:
    """Set the scheduler's state file and task history (flags win over luigi.cfg); return them."""
    cfg = luigi.configuration.get_config()
    state = state_path or cfg.get("scheduler", "state_path", DEFAULT_STATE_PATH)
    url = history_url or cfg.get("task_history", "db_connection", DEFAULT_HISTORY_URL)
    cfg.set("scheduler", "state_path", state)
    cfg.set("scheduler", "record_task_history", "true")
    cfg.set("task_history", "db_connection", url)
    Path(state).parent.mkdir(parents=True, exist_ok=True)
    database = sa.engine.make_url(url).database
    if url.startswith("sqlite") and database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return {"state_path": state, "db_connection": url}


def parser() -> argparse.ArgumentParser:
    """luigid's own flags (luigi/cmdline.py, passed on to it) and --history-db."""
    p = argparse.ArgumentParser(prog="adperf luigid", description=__doc__.splitlines()[0])
    p.add_argument("--background", action="store_true", help="detach, as luigid --background")
    p.add_argument("--pidfile", default=None, help="write the server's pid here (--background)")
    p.add_argument("--logdir", default=None, help="log folder (--background; /var/log/luigi)")
    p.add_argument("--state-path", default=None, help=f"state file ({DEFAULT_STATE_PATH})")
    p.add_argument("--address", default=None, help="listening address (default: all)")
    p.add_argument("--unix-socket", default=None, help="listen on this Unix socket instead")
    p.add_argument("--port", type=int, default=8082, help="listening port (default 8082)")
    p.add_argument("--history-db", default=None, help=f"task history ({DEFAULT_HISTORY_URL})")
    return p


def luigid_argv(args: argparse.Namespace, state_path: str) -> list[str]:
    """The flags of `args` as stock luigid takes them (its parser, luigi/cmdline.py)."""
    argv = ["--port", str(args.port), "--state-path", state_path]
    for flag in ("pidfile", "logdir", "address", "unix_socket"):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", value]
    return argv + (["--background"] if args.background else [])


def main(argv: list[str] | None = None) -> int:
    """Turn task history on, load the shim, then run luigi's own luigid with the flags."""
    from luigi.cmdline import luigid

    args = parser().parse_args(argv)
    chosen = configure_scheduler(args.state_path, args.history_db)
    install_task_history_shim()
    # Printed before luigid sets up its logging (with --background, to --logdir).
    print(
        f"adperf luigid: state {chosen['state_path']}, task history {_safe(chosen)}",
        file=sys.stderr,
    )
    luigid(luigid_argv(args, chosen["state_path"]))
    return 0


def _safe(chosen: dict[str, str]) -> str:
    """The history URL without its password."""
    return sa.engine.make_url(chosen["db_connection"]).render_as_string(hide_password=True)


if __name__ == "__main__":
    raise SystemExit(main())
