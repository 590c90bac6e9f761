"""`python -m bench.demo`: the cold `adperf demo` a new user waits for, median of `repeats` runs.

Each run is `adperf demo` (as `python -m tasks.cli demo`) in a fresh empty folder with no
luigi.cfg, so it takes the embedded sandbox defaults exactly as a fresh clone does: the world
built under `var/sandbox`, its fakes started, `DailyReport` of the world's last day (and the
two comparison days' tables it loads first) run cold, the summary printed. Wall seconds and
CPU seconds (user + sys of the command and its children: they move less with the machine's
load) per run; the load average before each run is recorded beside it. Writes
`<out>/demo.json`. Issue 19 asks for under 60 s wall on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LIMIT_S = 60.0


def one_run(workers: int) -> dict[str, Any]:
    """One cold demo in a fresh folder: wall and CPU seconds, exit code, load before it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADPERF_", "LUIGI_"))}
    with tempfile.TemporaryDirectory(prefix="adperf-demo-") as folder:
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "tasks.cli", "demo", "--workers", str(workers)],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise SystemExit(f"adperf demo failed ({run.returncode}):\n{run.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before": round(load, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="adperf demo --workers")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    args = parser.parse_args(argv)
    runs = [one_run(args.workers) for _ in range(args.repeats)]
    wall = statistics.median(r["wall_s"] for r in runs)
    cpu = statistics.median(r["cpu_s"] for r in runs)
    result = {"workers": args.workers, "runs": runs, "median_wall_s": wall, "median_cpu_s": cpu}
    print("| run | wall | CPU | load before |\n| --- | --- | --- | --- |")
    for i, r in enumerate(runs, 1):
        print(f"| {i} | {r['wall_s']} s | {r['cpu_s']} s | {r['load_before']} |")
    verdict = "met" if wall < LIMIT_S else "MISSED"
    print(f"median wall {wall} s, CPU {cpu} s: limit {LIMIT_S:.0f} s {verdict}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
