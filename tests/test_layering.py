"""STYLE.md rule 1: dependencies point one way; adperf/ never imports luigi."""

import ast
from pathlib import Path

ADPERF = Path(__file__).resolve().parents[1] / "adperf"


def test_adperf_never_imports_luigi_or_tasks() -> None:
    offenders = []
    for path in ADPERF.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("luigi", "tasks")
            ]
    assert offenders == []
    assert len(list(ADPERF.rglob("*.py"))) > 20  # the walk did see the package
