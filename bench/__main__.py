"""`python -m bench --profile small|medium|large`: every hot stage vs its baseline and its limit.

Inputs are generated once per profile under `<out>/<profile>/` (deterministic), then each stage
runs `repeats` times, each run in a fresh `python -m bench.stage` process (honest peak RSS),
baselines interleaved with the adperf stage they are compared with. Prints a Markdown table
and writes `<out>/<profile>/results-<UTC>.json` and `latest.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import data, report
from bench.profiles import PROFILES, BenchProfile

REPO = Path(__file__).resolve().parent.parent
README = Path(__file__).resolve().parent / "README.md"

GROUPS: dict[str, list[str]] = {
    "logs": ["logs.adperf", "logs.duckdb", "logs.naive"],
    "ltv": ["ltv.adperf", "ltv.adperf_warm", "ltv.lifetimes"],
    "pagerank": ["pagerank.adperf", "pagerank.networkx"],
    "warehouse": [
        "warehouse.adperf_sqlite",
        "warehouse.to_sql_sqlite",
        "warehouse.adperf_mariadb",
        "warehouse.to_sql_mariadb",
    ],
    # In this order: the re-run and the backfill need the day the cold run completed.
    "pipeline": ["pipeline.cold", "pipeline.rerun", "pipeline.backfill", "pipeline.check365"],
}


def _log(msg: str) -> None:
    print(f"[bench {dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def run_stage(name: str, prof: BenchProfile, data_dir: Path, cap_s: float | None) -> dict[str, Any]:
    """One run of a stage in a fresh process; an error or a cap is recorded, never raised."""
    out = data_dir / "runs" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    log = data_dir / "runs" / f"{name}.log"
    cmd = [sys.executable, "-m", "bench.stage", name, "--profile", prof.name]
    cmd += ["--data", str(data_dir), "--out", str(out)]
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=err, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group only
            proc.wait()
            _log(f"{name}: stopped at the {cap_s:.0f} s cap")
            return {"seconds": cap_s, "rows": 0, "peak_rss_bytes": 0, "capped": True}
    if rc != 0 or not out.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [f"exit {rc}"]
        _log(f"{name}: failed (exit {rc}): {tail[0]} (log: {log})")
        return {"error": tail[0]}
    result: dict[str, Any] = json.loads(out.read_text())
    _log(
        f"{name}: {result['seconds']:.3f} s timed ({result.get('cpu_seconds', 0):.2f} s CPU), "
        f"{result['rows']:,} rows, "
        f"{result['peak_rss_bytes'] / report.MIB:,.0f} MiB peak "
        f"({time.perf_counter() - t0:.1f} s with setup)"
    )
    return result


def mysql_reachable() -> bool:
    """True when the MariaDB server of the warehouse stages answers."""
    import sqlalchemy as sa

    from bench.stage import MYSQL_URL

    engine = sa.create_engine(MYSQL_URL + "/", connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def checks(stages: dict[str, Any], data_dir: Path) -> dict[str, str]:
    """Same data, same results: row counts, LTV parameters side by side, PageRank L1."""
    out: dict[str, str] = {}
    kept = {n: stages[n]["info"].get("kept") for n in GROUPS["logs"] if "info" in stages.get(n, {})}
    if kept:
        counts = stages.get("logs.adperf", {}).get("info", {}).get("counts")
        out["logs rows kept"] = (
            ", ".join(f"{n.split('.')[1]} {v:,}" for n, v in kept.items())
            + " of the same lines. The naive loop keeps what adperf keeps (well-formed lines of"
            " the day of the events adperf uses) but does not drop exact repeats; DuckDB"
            " (ignore_errors) every line that parses; adperf what its counts say: "
            + json.dumps(counts, sort_keys=True)
        )
        naive = kept.get("logs.naive")
        if counts and naive is not None and kept.get("logs.adperf") is not None:
            same = kept["logs.adperf"] + counts.get("duplicates", 0) == naive
            out["logs adperf vs naive"] = (
                "same rows kept" if same else "DIFFERENT rows kept (adperf + duplicates != naive)"
            )
    params = {
        n: stages[n]["info"].get("params") for n in GROUPS["ltv"] if "info" in stages.get(n, {})
    }
    for n, p in params.items():
        out[f"{n} params"] = json.dumps(p, sort_keys=True)
    a, b = params.get("ltv.adperf"), params.get("ltv.lifetimes")
    if (
        a
        and b
        and a.get("bgnbd")
        and b.get("bgnbd")
        and a.get("gammagamma")
        and b.get("gammagamma")
    ):
        rel = max(
            abs(a[m][k] - b[m][k]) / abs(b[m][k]) for m in ("bgnbd", "gammagamma") for k in b[m]
        )
        out["LTV params, adperf vs lifetimes"] = f"max relative difference {rel:.2e}"
    scratch = data_dir / "scratch"
    pa = scratch / "pagerank.adperf" / "pagerank.adperf.npy"
    pn = scratch / "pagerank.networkx" / "pagerank.networkx.npy"
    ran = all("median_s" in stages.get(n, {}) for n in GROUPS["pagerank"])
    if ran and pa.exists() and pn.exists() and not stages["pagerank.networkx"].get("capped"):
        l1 = float(np.abs(np.load(pa) - np.load(pn)).sum())
        verdict = "< 1e-6: same ranks" if l1 < 1e-6 else ">= 1e-6: DIFFERENT"
        out["PageRank L1(adperf - networkx)"] = f"{l1:.2e} ({verdict})"
    info = stages.get("pipeline.rerun", {}).get("info")
    if info:
        out["pipeline.rerun"] = (
            f"luigi status {info.get('status')}, ran nothing: {info.get('ran_nothing')}"
        )
    info = stages.get("pipeline.backfill", {}).get("info")
    if info:
        out["pipeline.backfill"] = f"RangeDaily found {info.get('missing')} of 365 days missing"
    cold = stages.get("pipeline.cold", {}).get("info")
    if cold:
        runs = stages.get("pipeline.cold", {}).get("runs", [])
        fakes_mib = max((r.get("fakes_peak_rss_bytes", 0) for r in runs), default=0) / report.MIB
        out["pipeline.cold"] = (
            f"luigi status {cold.get('status')}, workers {cold.get('workers')}; not counted: "
            f"the sandbox fakes (the vendors' servers) started in {cold.get('fakes_start_s')} s "
            f"before the clock and peaked at {fakes_mib:,.0f} MiB in their own process"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="small")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench", help="cache + results")
    parser.add_argument("--repeat", type=int, help="runs per stage (default: the profile's, 3)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated groups or stages of {sorted(GROUPS)}"
    )
    parser.add_argument("--readme", action="store_true", help="write the table to bench/README.md")
    args = parser.parse_args(argv)

    prof = PROFILES[args.profile]
    repeats = args.repeat or prof.repeats
    nx_repeats = min(repeats, prof.networkx_repeats)
    data_dir = (args.out / prof.name).resolve()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    selected = {
        g: [s for s in stages if not wanted or g in wanted or s in wanted]
        for g, stages in GROUPS.items()
    }
    skipped: dict[str, str] = {}
    if any(s.endswith("mariadb") for s in selected["warehouse"]) and not mysql_reachable():
        for s in [s for s in selected["warehouse"] if s.endswith("mariadb")]:
            selected["warehouse"].remove(s)
            skipped[s] = "MariaDB at 127.0.0.1:3306 not reachable"

    started = dt.datetime.now(dt.UTC)
    _log(f"profile {prof.name}: preparing inputs under {data_dir}")
    t0 = time.perf_counter()
    data.prepare(data_dir, prof)
    _log(f"inputs ready in {time.perf_counter() - t0:.1f} s")

    runs: dict[str, list[dict[str, Any]]] = {}
    for group, names in selected.items():
        if group == "pipeline":
            order = [n for n in names for _ in range(repeats)]
        else:  # interleaved, so a noisy minute hits adperf and its baselines alike
            order = [
                n
                for i in range(repeats)
                for n in names
                if i < (nx_repeats if n == "pagerank.networkx" else repeats)
            ]
        for name in order:
            cap = prof.networkx_cap_s if name == "pagerank.networkx" else None
            runs.setdefault(name, []).append(run_stage(name, prof, data_dir, cap))

    stages = {name: report.summarize(r) for name, r in runs.items()}
    for name, why in skipped.items():
        stages[name] = {"runs": [], "error": f"skipped: {why}"}
    earlier = _earlier_stages(data_dir, set(stages)) if wanted else {}
    stages = {
        n: {**earlier, **stages}[n]
        for g in GROUPS.values()
        for n in g
        if n in {**earlier, **stages}
    }
    result: dict[str, Any] = {
        "profile": prof.name,
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m bench --profile {prof.name}"
        + (f" --repeat {args.repeat}" if args.repeat else ""),
        "repeats": repeats,
        "networkx_repeats": nx_repeats,
        "sizes": {k: v for k, v in vars(prof).items() if k != "name"},
        "machine": report.machine(),
        "stages": stages,
        "checks": checks(stages, data_dir),
    }
    result["targets"] = [vars(t) for t in report.targets(stages)]
    text = report.markdown(result)
    print(text)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    for name in (f"results-{stamp}.json", "latest.json"):
        (data_dir / name).write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    (data_dir / "latest.md").write_text(text)
    if args.readme:
        write_readme(prof.name, text, result["machine"])
    failed = [
        n
        for n, s in stages.items()
        if ("error" in s and not s["error"].startswith("skip")) or s.get("failed_runs")
    ]
    if failed:
        _log(f"failed stages: {failed}")
    return 1 if failed else 0


def _earlier_stages(data_dir: Path, fresh: set[str]) -> dict[str, Any]:
    """With --only: the other stages' results of the previous run (marked with its start)."""
    latest = data_dir / "latest.json"
    if not latest.exists():
        return {}
    previous: dict[str, Any] = json.loads(latest.read_text())
    return {
        n: {**s, "from_run": s.get("from_run", previous["started"])}
        for n, s in previous["stages"].items()
        if n not in fresh
    }


def write_readme(profile: str, table: str, machine: dict[str, Any]) -> None:
    """Replace the profile's section of bench/README.md (between its markers) with `table`."""
    start, end = f"<!-- bench:{profile}:start -->", f"<!-- bench:{profile}:end -->"
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
    body = (
        f"{start}\n\nMachine: {machine['nproc']} cores ({machine['cpu']}), "
        f"{machine['ram_gib']} GiB RAM, Python {machine['python']}; {libs}.\n\n{table}\n{end}"
    )
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n### `{profile}`\n\n{body}\n"
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
