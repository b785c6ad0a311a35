"""Where does MUMPS (preset "direct") beat the field split (preset "iterative")? The
measurement behind ``solver/presets.preset_for`` (issue 19, item 7). Under bin/nzsp-env:

    python3 -m benchmarks.auto_crossover            # every case, both presets, a table
    python3 -m benchmarks.auto_crossover --cases demo-2d-60nm fipy-10nm

Each (case, preset) is its own 1-rank subprocess with one BLAS/OpenMP thread, the presets
of a case run back to back (direct first, then iterative, then, with --repeat 2, again in
the other order); the table takes the lower time of the repeats. A run makes the same
fixed steps with both presets (``Simulation.step(dt)``, dt doubling from the case's first
dt), so the Newton counts can be compared; only the steps are timed (process CPU time and
wall time), not the mesh, the forms or the start-up solves. The table gives CPU seconds
per Newton iteration, their ratio direct / iterative, and the ratio of the steps' CPU
time (which also counts the split's extra Newton iterations). The results are in
docs/performance.md, "The `auto` preset" (``--repeat 2``; ``--table`` reprints saved
``--json`` files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_QUIET = {"output.verbosity": 0}


def _mesh(g: str, gb: str, nuc: str) -> dict:
    return {"mesh.size_grain": g, "mesh.size_gb": gb, "mesh.size_nucleus": nuc}


# label -> (config, overrides, first dt in s, steps)
CASES: dict[str, tuple[str, dict, float, int]] = {
    # 2D demo: two potentials, mechanics with plasticity (the config's mesh is 60/15/12 nm).
    "demo-2d-120nm": ("configs/demo.yaml", _mesh("120 nm", "30 nm", "24 nm"), 1e-6, 5),
    "demo-2d-60nm": ("configs/demo.yaml", {}, 1e-6, 5),
    "demo-2d-30nm": ("configs/demo.yaml", _mesh("30 nm", "7.5 nm", "6 nm"), 1e-6, 5),
    # The FiPy comparison's reduced problem: single potential, no mechanics, uniform mesh.
    # (One grain: no GB, but the mesh check wants gb_width >= size_gb.) Doubling dt from
    # 1 us, the 8th step (128 us) exceeds the config's dt_max and fails: 7 steps.
    "fipy-40nm": (
        "configs/bench/fipy_reduced.yaml",
        {**_mesh("40 nm", "40 nm", "40 nm"), "microstructure.gb_width": "40 nm"},
        1e-6,
        7,
    ),
    "fipy-20nm": ("configs/bench/fipy_reduced.yaml", _mesh("20 nm", "20 nm", "20 nm"), 1e-6, 7),
    "fipy-10nm": ("configs/bench/fipy_reduced.yaml", _mesh("10 nm", "10 nm", "10 nm"), 1e-6, 7),
    "fipy-5nm": ("configs/bench/fipy_reduced.yaml", _mesh("5 nm", "5 nm", "5 nm"), 1e-6, 7),
    # 3D demo (mechanics, plasticity) on a coarse mesh: MUMPS's 3D fill-in at the
    # config's own mesh (104k DOFs) did not finish a factorisation in 9 min.
    "demo-3d-40nm": ("configs/demo3d.yaml", _mesh("40 nm", "30 nm", "25 nm"), 5e-6, 3),
    "demo-3d-25nm": ("configs/demo3d.yaml", _mesh("25 nm", "20 nm", "15 nm"), 5e-6, 3),
}


def run_one(label: str, preset: str) -> dict:
    """One case with one preset on this process (1 rank): counts and the steps' times."""
    from mpi4py import MPI

    import nzsp_fem
    from nzsp_fem.run import Simulation, StepFailed

    config, overrides, dt0, steps = CASES[label]
    cfg = nzsp_fem.load_config(str(REPO / config), overrides={**overrides, **_QUIET, "solver.preset": preset})
    sim = Simulation(cfg, comm=MPI.COMM_WORLD)
    sim.start()
    newton = linear = done = 0
    failed = ""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    dt = dt0
    for _ in range(steps):
        try:
            info = sim.step(dt)
        except StepFailed as e:
            failed = str(e)
            break
        done += 1
        newton += info.report.newton_iterations
        linear += info.report.linear_iterations
        dt *= 2
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = {
        "case": label,
        "preset": sim.solver.preset,
        "dofs": sim.problem.dofs,
        "steps": done,
        "newton": newton,
        "linear": linear,
        "cpu_s": cpu,
        "wall_s": wall,
        "metal_fraction": sim.diagnostics.metal_fraction,
        "failed": failed,
    }
    sim.close()
    return out


def run_subprocess(label: str, preset: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "benchmarks.auto_crossover", "--one", label, "--preset", preset]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        return {"case": label, "preset": preset, "error": res.stderr.strip().splitlines()[-1:]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| case | DOFs | steps | Newton d / i | lin. it. / Newton (i) | CPU s / Newton direct | iterative "
        "| direct / iterative | same, whole steps |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for label in dict.fromkeys(r["case"] for r in rows):
        d = [r for r in rows if r["case"] == label and r.get("preset") == "direct" and "error" not in r]
        i = [r for r in rows if r["case"] == label and r.get("preset") == "iterative" and "error" not in r]
        if not d or not i:
            errs = [r.get("error") or r.get("failed") for r in rows if r["case"] == label]
            lines.append(f"| {label} | | | | | | | | failed: {errs} |")
            continue

        def per_newton(rs: list[dict]) -> float:
            return min(r["cpu_s"] / max(r["newton"], 1) for r in rs)

        pd, pi = per_newton(d), per_newton(i)
        whole = min(r["cpu_s"] for r in d) / min(r["cpu_s"] for r in i)
        lines.append(
            f"| {label} | {d[0]['dofs']} | {d[0]['steps']}/{i[0]['steps']} | {d[0]['newton']} / {i[0]['newton']} "
            f"| {i[0]['linear'] / max(i[0]['newton'], 1):.1f} | {pd:.3f} | {pi:.3f} | {pd / pi:.2f} | {whole:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--preset", choices=["direct", "iterative"], help=argparse.SUPPRESS)
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--repeat", type=int, default=1, help="pairs per case, the order alternating")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--table", nargs="+", type=Path, help="only print the table of these --json files")
    args = ap.parse_args(argv)
    if args.table:
        print(table([r for f in args.table for r in json.loads(f.read_text())]))
        return 0
    if args.one:
        print(json.dumps(run_one(args.one, args.preset)))
        return 0
    rows: list[dict] = []
    for label in args.cases:
        for k in range(args.repeat):
            for preset in ("direct", "iterative") if k % 2 == 0 else ("iterative", "direct"):
                r = run_subprocess(label, preset)
                print(json.dumps(r), flush=True)
                rows.append(r)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
