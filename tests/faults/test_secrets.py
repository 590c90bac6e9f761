"""No token, HMAC key or raw user id in any sink of a DEBUG-logged run; SQL is parameterized.

The clean run (conftest.py) plants known secrets in the environment: the HMAC key and Slack
token are ours, the API tokens are the ones the sandbox fakes accept. Every sink is searched.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import luigi
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf import warehouse
from tasks.load import DailyReport

from ..tasks.test_luigid import api, start_luigid
from .conftest import CleanRun
from .harness import DAY, END, SLACK_TOKEN, configure, copy_run, planted, planted_env

REPO = Path(__file__).resolve().parents[2]
_WORD = re.compile(r"[A-Za-z0-9_\-]+")


def _secrets() -> list[str]:
    return [*planted().values(), SLACK_TOKEN]


def _raw_ids(clean: CleanRun) -> set[str]:
    users = pd.read_parquet(clean.root / "world" / "truth" / "users.parquet")
    raw = set(users["user_id"].dropna()) | set(users["appsflyer_id"].dropna())
    assert len(raw) > 100
    return {str(r) for r in raw}


def _sinks(clean: CleanRun) -> dict[str, str]:
    """Every sink of the run as text: logs, each lake file, the warehouse, Slack."""
    out = {"logs": clean.logs}
    for path in sorted((clean.root / "lake").rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            text = " ".join(str(v) for col in table.columns for v in col.to_pylist())
            out[str(path)] = text + " " + " ".join(table.column_names)
        else:
            out[str(path)] = path.read_bytes().decode("utf-8", errors="replace")
    engine = warehouse.make_engine(clean.warehouse_url)
    try:
        for name in sa.inspect(engine).get_table_names():
            with engine.connect() as conn:
                df = pd.read_sql(sa.text(f'SELECT * FROM "{name}"'), conn)  # our table names
            out[f"warehouse.{name}"] = " ".join(str(v) for v in df.to_numpy().ravel())
    finally:
        engine.dispose()
    out["warehouse.db bytes"] = (clean.root / "warehouse.db").read_bytes().decode("latin-1")
    out["slack messages"] = repr(clean.messages)
    out["slack files"] = " ".join(f["content"].decode("latin-1") for f in clean.files)
    return out


def test_the_run_logged_at_debug(clean: CleanRun) -> None:
    # The search below means something only if the logs are the verbose ones.
    assert "DEBUG" in clean.logs and "luigi-interface" in clean.logs
    assert len(clean.logs) > 10_000 and len(clean.messages) == 1


def test_no_secret_in_logs_lake_warehouse_or_slack(clean: CleanRun) -> None:
    sinks = _sinks(clean)
    assert len(sinks) > 50
    found = [(where, s[:6]) for where, text in sinks.items() for s in _secrets() if s in text]
    assert found == []


def test_no_raw_user_id_in_logs_lake_warehouse_or_slack(clean: CleanRun) -> None:
    raw = _raw_ids(clean)
    found = {
        where: sorted(raw & set(_WORD.findall(text)))[:3] for where, text in _sinks(clean).items()
    }
    assert {k: v for k, v in found.items() if v} == {}
    # The control: the world's own files do hold them, so the search can find them.
    installs = pd.read_parquet(clean.root / "world" / "installs.parquet")
    assert raw & set(_WORD.findall(" ".join(str(v) for v in installs.to_numpy().ravel())))


def test_secrets_are_never_luigi_parameters(clean: CleanRun) -> None:
    """Not as a parameter of any registered task or config class, nor as a value the scheduler
    (and luigid's UI) shows for any task of a report day's graph."""
    suspicious = re.compile(r"token|secret|password|passwd|hmac|credential|api_key", re.I)
    named = [
        f"{name}.{param}"
        for name, cls in Register._get_reg().items()
        if isinstance(cls, type)
        and issubclass(cls, luigi.Task)
        and cls.__module__.split(".")[0] in ("tasks", "adperf")
        for param, _ in cls.get_params()
        if suspicious.search(param)
    ]
    assert named == []

    configure(clean.root)
    with planted_env(slack=True):
        seen: dict[str, str] = {}
        todo = [DailyReport(date=END)]
        while todo:
            task = todo.pop()
            if task.task_id in seen:
                continue
            # What the scheduler records and luigid shows: the id and the string parameters.
            seen[task.task_id] = repr(task.to_str_params())
            todo.extend(luigi.task.flatten(task.requires()))
    Register.clear_instance_cache()
    assert len(seen) > 50
    shown = " ".join(f"{task_id} {params}" for task_id, params in seen.items())
    leaks = [s[:6] for s in _secrets() if s in shown]
    assert leaks == []


# What the run below must do again (derived days, and extracts that read raw ids in the worker;
# not the LTV fit, slow and reached through the same inputs).
_REDO = (
    *(f"{d}/date={DAY}" for d in ("installs", "payments", "events", "attribution", "spend")),
    *(f"{d}/date={DAY}" for d in ("reconciliation", "cohort_roas", "contribution")),
    *(f"{d}/date={DAY}" for d in ("campaign_report", "actions", "restatements", "spend_latest")),
    "reports",
    "slack_posts",
)
_STATUSES = ("DONE", "FAILED", "PENDING", "RUNNING", "DISABLED", "UNKNOWN")


def test_luigid_shows_no_secret_or_raw_id_in_params_or_errors(
    tmp_path: Path, clean: CleanRun
) -> None:
    """A report day on a real luigid, Slack refusing the planted token (so a task fails and
    luigid holds its error): every task's params, the dependency graph and the error texts, as
    luigid's API serves them to the UI, hold no token, HMAC key or raw user id."""
    from adperf.sandbox.fake_slack import FakeSlack
    from tasks.resources import resources

    root = copy_run(clean.root, tmp_path / "run", drop=_REDO)
    slack = FakeSlack("xoxb-the-token-slack-expects-0000")  # not the planted one: invalid_auth
    configure(root, slack_url=slack.start())
    (tmp_path / "var").mkdir()
    served: dict[str, Any] = {}
    try:
        for port in start_luigid(tmp_path / "var"):
            with planted_env(slack=True):
                resources(END)  # the fakes start before the run
                result = luigi.build(
                    [DailyReport(date=END)],
                    scheduler_host="127.0.0.1",
                    scheduler_port=port,
                    workers=1,
                    detailed_summary=True,
                )
            root_id = DailyReport(date=END).task_id
            served["dep_graph"] = api(port, "dep_graph", {"task_id": root_id})
            for status in _STATUSES:
                served[status] = api(port, "task_list", {"status": status, "upstream_status": ""})
            served["errors"] = {
                task_id: api(port, "fetch_error", {"task_id": task_id})
                for task_id in served["FAILED"]
            }
    finally:
        slack.stop()
        Register.clear_instance_cache()
    assert result.status == LuigiStatusCode.FAILED, result.summary_text
    # The search is meaningful: luigid served the whole graph, params and the failure's text.
    assert len(served["dep_graph"]) > 50 and len(served["DONE"]) > 50
    families = {t["name"] for t in served["DONE"].values()}
    assert {"Installs", "Payments", "EventLogs", "Attribution", "Ltv", "LoadReport"} <= families
    assert {t["name"] for t in served["FAILED"].values()} == {"SlackReport"}
    errors = " ".join(e["error"] for e in served["errors"].values())
    assert "invalid_auth" in errors and DAY in errors
    assert all(t["params"].get("date") == DAY for t in served["FAILED"].values())
    shown = json.dumps(served)
    assert [s[:6] for s in _secrets() if s in shown] == []
    assert sorted(_raw_ids(clean) & set(_WORD.findall(shown)))[:3] == []


# SQL text built by string formatting, each with the reason it cannot inject: (file, line text).
ALLOWED_SQL_FORMATTING = {
    # [payments] table is matched against _IDENT before it is formatted in.
    ("adperf/sources/payments.py", "return DEFAULT_QUERY.format(table=table)"),
    # wraps the query above or the operator's own [payments] query (config, not data).
    (
        "adperf/sources/payments.py",
        'return _bound(f"SELECT COUNT(*) FROM ({_sql(table, query)}) AS q")',
    ),
    # table and column names come from adperf's own sa.MetaData, not from input, quoted by the
    # dialect's identifier preparer; the type is compiled by the dialect.
    (
        "adperf/warehouse.py",
        'f"ALTER TABLE {quote.format_table(table)} ADD COLUMN {quote.format_column(column)} "',
    ),
    # GAQL has no bind parameters; the values are date.isoformat() strings of the window.
    (
        "adperf/sources/google_ads.py",
        "service, caller.customer_id, CAMPAIGN_QUERY.format(**window), timeout, raw=True",
    ),
    (
        "adperf/sources/google_ads.py",
        "lambda: stream(service, caller.customer_id, AD_QUERY.format(**window), timeout, "
        "raw=True),",
    ),
    # GAQL again: the ids are checked with isdigit() before they reach the query.
    (
        "adperf/actions/google_ads.py",
        'query = QUERY.format(ids=", ".join(sorted(set(wanted) - set(found))))',
    ),
}
_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|ALTER|CREATE|DROP|WHERE)\b")


def _formatted_sql(path: Path) -> list[str]:
    """Lines of `path` that build SQL text with an f-string, % or .format()."""
    source = path.read_text(encoding="utf-8")
    lines, tree = source.splitlines(), ast.parse(source)
    constants = _string_constants(tree)
    hits = []
    for node in ast.walk(tree):
        literal = ""
        if isinstance(node, ast.JoinedStr):
            literal = "".join(
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
                literal = node.left.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
        ):
            base = node.func.value
            if isinstance(base, ast.Constant) and isinstance(base.value, str):
                literal = base.value
            elif isinstance(base, ast.Name):
                literal = constants.get(base.id, "")
        if literal and _SQL.search(literal):
            hits.append(lines[node.lineno - 1].strip())
    return hits


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level NAME = "text" (or "text".strip()) assignments."""
    out = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target, value = node.targets[0], node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
            value = value.func.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            out[target.id] = str(value.value)
    return out


def test_all_sql_is_parameterized() -> None:
    found = {
        (str(path.relative_to(REPO)), line)
        for folder in ("adperf", "tasks")
        for path in sorted((REPO / folder).rglob("*.py"))
        for line in _formatted_sql(path)
    }
    assert found - ALLOWED_SQL_FORMATTING == set()
    # The control: the scan finds every known, justified case (an entry whose line is gone
    # is removed with it, so the list never allows more than the code does).
    assert ALLOWED_SQL_FORMATTING - found == set()


@pytest.mark.parametrize(
    "snippet, flagged",
    [
        ('q = f"SELECT * FROM t WHERE id = {x}"', True),
        ('q = "DELETE FROM t WHERE id = %s" % x', True),
        ('q = "UPDATE t SET a = {}".format(x)', True),
        ('Q = "SELECT a FROM t WHERE b = {b}"\nq = Q.format(b=x)', True),
        ('FIX = "set {account} in the config"\nq = FIX.format(account=x)', False),
        ('q = sa.text("SELECT * FROM t WHERE id = :id")', False),
        ('msg = f"payments for {day}: read {n} rows"', False),
    ],
)
def test_the_sql_scan_flags_formatting(tmp_path: Path, snippet: str, flagged: bool) -> None:
    path = tmp_path / "m.py"
    path.write_text(snippet + "\n")
    assert bool(_formatted_sql(path)) is flagged
