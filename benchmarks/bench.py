"""Performance benchmark of the coupled solver: ``make bench`` / ``python3 -m benchmarks.bench``
(from the repository root; bin/nzsp-env puts it on PYTHONPATH).

Three ways to call it:

* ``python3 -m benchmarks.bench`` (the driver, full run): launches every case as its own
  ``mpirun -n R python3 -m benchmarks.bench --case JSON --out FILE`` subprocess (fresh
  process: clean peak memory and PETSc log), collects the JSON results and writes
  ``docs/performance.md`` and ``docs/performance.csv``.
* ``python3 -m benchmarks.bench --quick``: the same on the smallest sizes (a smoke check;
  writes its reports to ``results/bench/quick/`` unless ``--output-dir`` is given).
* ``python3 -m benchmarks.bench --cases PATTERNS``: only the planned cases whose ids match
  (a reduced run, e.g. the iterative preset at 282k DOFs and the 3D demo; with
  ``--configs`` naming the config cases to plan). Reports go to ``results/bench/selected/``.
* ``python3 -m benchmarks.bench --case JSON --out FILE``: one case (the worker), under mpirun.

The benchmark is a tool, not part of the library: it only uses nzsp_fem's public API. The
layout: ``cases.py`` (the frozen case, sizes, variants, the plan of a run), ``measure.py``
(one case in-process, the Poisson baseline, the adaptive probe, the worker and subprocess
driving), ``analysis.py`` (growth, parallel efficiency, paper-case estimate), ``report.py``
(CSV and Markdown). Scratch output (per-case JSON and logs, ``-log_view`` text, the mesh
cache, ``all.json``) goes to ``results/bench/`` (gitignored), or ``--scratch-dir`` /
``NZSP_BENCH_DIR``; only the final reports go to ``docs/``.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import time
from pathlib import Path

from .cases import CONFIG_CASES, DT, REPO, SCRATCH, STEPS, config_plan, plan, shown_path
from .measure import run_subprocess, worker
from .report import write_reports


def _git_commit() -> str:
    try:
        head = (REPO / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            p = REPO / ".git" / ref
            if p.exists():
                return p.read_text().strip()[:12]
            packed = REPO / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else []:
                if line.endswith(ref):
                    return line.split()[0][:12]
            return "?"
        return head[:12]
    except OSError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine_info() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        mem = next(
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "mem_mb": mem,
        "loadavg": list(os.getloadavg()),
        "host": platform.node(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _git_commit(),
    }


def select(cases: list[dict], patterns: str) -> list[dict]:
    """The cases whose id matches one of the comma-separated shell patterns, in plan order
    (e.g. ``iterative-h5.72-*,demo3d-tagged-iterative-*``)."""
    wanted = [p for p in patterns.split(",") if p]
    return [c for c in cases if any(fnmatch.fnmatchcase(c["id"], p) for p in wanted)]


def drive(args) -> int:
    t0 = time.perf_counter()
    scratch = Path(args.scratch_dir) if args.scratch_dir else SCRATCH
    if args.output_dir:
        outdir = Path(args.output_dir)
    elif args.cases:  # a selection is no full run: its reports must not replace docs/
        outdir = scratch / "selected"
    else:
        outdir = scratch / "quick" if args.quick else REPO / "docs"
    outdir.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        md_path, csv_path = write_reports(
            outdir,
            saved["results"],
            saved["info"],
            saved.get("quick", args.quick),
            saved.get("steps", args.steps),
            saved.get("dt", args.dt),
            scratch,
        )
        print(f"rewrote {md_path} and {csv_path} from {args.from_json}")
        return 0
    info = machine_info()

    def log(msg):
        print(f"[bench {time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    factors = [float(x) for x in args.factors.split(",")] if args.factors else None
    it_factors = [float(x) for x in args.iterative_factors.split(",")] if args.iterative_factors else None
    cases = plan(
        args.quick,
        args.steps,
        args.dt,
        factors,
        it_factors,
        variants=False if args.no_variants else None,
        scratch=scratch,
    )
    log(
        f"{len(cases)} cases, {args.steps} steps of {args.dt:g} s each; machine {info['cpu']}, "
        f"load {info['loadavg'][0]:.1f}; scratch {shown_path(scratch)}/"
    )
    configs = [c for c in (args.configs or "").split(",") if c]
    cases += config_plan(configs, scratch)
    if args.cases:
        cases = select(cases, args.cases)
        if not cases:
            log(f"no case matches {args.cases!r}")
            return 2
    results = []
    for case in cases:
        results.append(run_subprocess(case, args.timeout, log, scratch))
    info["loadavg_end"] = list(os.getloadavg())
    info["total_s"] = time.perf_counter() - t0
    (scratch / ("all_quick.json" if args.quick else "all.json")).write_text(
        json.dumps(
            {"info": info, "results": results, "quick": args.quick, "steps": args.steps, "dt": args.dt}, indent=1
        )
    )
    md_path, csv_path = write_reports(outdir, results, info, args.quick, args.steps, args.dt, scratch)
    log(f"wrote {md_path} and {csv_path} in {info['total_s'] / 60:.1f} min")
    return 0 if all("failed" not in r for r in results) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smallest sizes only (smoke check)")
    p.add_argument("--case", help="worker mode: run one case (JSON) in this MPI job")
    p.add_argument("--out", help="worker mode: where to write the result JSON")
    p.add_argument("--steps", type=int, default=STEPS, help=f"time steps per case (default {STEPS})")
    p.add_argument("--dt", type=float, default=DT, help=f"fixed time step in s (default {DT:g})")
    p.add_argument("--factors", help="comma-separated mesh refinement factors (direct preset and default for both)")
    p.add_argument("--iterative-factors", help="comma-separated refinement factors for the iterative preset")
    p.add_argument("--from-json", help="only rewrite the reports from a saved all*.json (in the scratch directory)")
    p.add_argument("--no-variants", action="store_true", help="skip the candidate-fix variants (full run)")
    p.add_argument(
        "--configs",
        default=None,
        help="comma-separated repository configs to measure as they are (paper, demo3d, demo3d-tagged; "
        "default: all in a full run, none with --quick)",
    )
    p.add_argument(
        "--cases",
        help="comma-separated shell patterns of case ids to run, e.g. 'iterative-h5.72-*,demo3d-tagged-iterative-*' "
        "(reports go to <scratch dir>/selected unless --output-dir is given)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="per-case time limit in s (default 1800)")
    p.add_argument("--output-dir", help="where performance.md/.csv go (default docs/, --quick: <scratch dir>/quick)")
    p.add_argument(
        "--scratch-dir",
        help="per-case JSON, logs, -log_view text, mesh cache, all*.json "
        "(default $NZSP_BENCH_DIR or results/bench/, gitignored)",
    )
    args = p.parse_args(argv)
    if args.configs is None:
        args.configs = "" if args.quick else ",".join(CONFIG_CASES)
    if args.case:
        if not args.out:
            p.error("--case needs --out")
        return worker(args.case, args.out)
    return drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
