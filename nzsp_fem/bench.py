"""Performance benchmark of the coupled solver: ``make bench`` / ``python3 -m nzsp_fem.bench``.

Three ways to call it:

* ``python3 -m nzsp_fem.bench`` (the driver, full run): launches every case as its own
  ``mpirun -n R python3 -m nzsp_fem.bench --case JSON --out FILE`` subprocess (fresh
  process: clean peak memory and PETSc log), collects the JSON results and writes
  ``docs/performance.md`` and ``docs/performance.csv``.
* ``python3 -m nzsp_fem.bench --quick``: the same on the smallest sizes (a smoke check;
  writes to ``scratch/bench/quick/`` unless ``--output-dir`` is given).
* ``python3 -m nzsp_fem.bench --case JSON --out FILE``: one case (the worker), under mpirun.

The case is the 2D polycrystal of configs/demo.yaml as of commit 540e097 (4 random grains,
two nuclei on the electrode plus a Na layer, potentiostatic -0.45 V, mechanics + J2
plasticity), copied here so that later edits of the demo do not change the benchmark. The mesh sizes (grain, GB, nucleus) are
divided by ``h_factor``; after ``initialize()`` every case takes the same fixed number of
steps with the same fixed dt, so all sizes do the same physical work.

What a case measures (all times are maxima over ranks; "wall" is elapsed time, "cpu" the
process CPU time, which is less sensitive to other jobs on a shared machine):

* per step: wall and CPU time, Newton iterations, linear iterations;
* the split of the step: assembly (the SNES residual and Jacobian callbacks, timed by
  wrapping SNESProblem._residual/_jacobian from outside), linear solve (the rest of
  SNESSolve: PETSc KSPSolve + PCSetUp), and the return mapping: the extra cost of assembling
  the plastic residual/Jacobian over the elastic one (same mesh, same state, a second
  CoupledProblem with plasticity off), times the number of assemblies, plus the committed
  state update (PlasticState.commit). The return mapping is part of "assembly" except the
  commit;
* PETSc log events of the time-step stage (a profile; ``-log_view`` text for profiled cases);
* peak memory (getrusage maxrss) per rank after the steps, and per DOF;
* a baseline in the same process: scalar P1 Poisson (CG + BoomerAMG, rtol 1e-8) on the
  same mesh, assembly + setup + solve.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / "scratch" / "bench"
MESH_CACHE = SCRATCH / "meshes"

# configs/demo.yaml as of commit 540e097 (mesh sizes are scaled per case). The demo has since
# moved to explicit seeds and nuclei at y = 0.4/0.15 um; the benchmark keeps this frozen copy.
BASE_CASE = {
    "name": "bench",
    "domain": {"dim": 2, "size": ["1.2 um", "0.8 um"]},
    "microstructure": {"grains": 4, "rng_seed": 3, "gb_width": "30 nm"},
    "nuclei": {"radius": "60 nm", "positions": [["0 um", "0.25 um"], ["0 um", "0.6 um"]],
               "electrode_layer": "40 nm"},
    "materials": {"transport": "nernst-einstein"},
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m"},
    "electrochemistry": {"electrode": {"mode": "potentiostatic", "potential": "-0.45 V"}},
    "mechanics": {"enabled": True, "plasticity": True},
    "time": {"t_end": "2 ms", "dt_initial": "1 us", "dt_max": "100 us", "n_outputs": 4},
}
BASE_MESH_M = {"size_grain": 60e-9, "size_gb": 15e-9, "size_nucleus": 12e-9}

DT = 1e-5          # s, fixed step of every case
STEPS = 3          # fixed number of steps of every case (3 keeps the full run near 15 min)
# h_factor -> DOFs (measured): 1.0 -> 9.2k, 2.35 -> 39k, 4.7 -> 139k; DOFs ~ h_factor^1.83.
# Direct preset: the demo mesh (1.0) and ~25k, 50k, 100k, 200k DOFs; 2 ranks at the largest.
FULL_FACTORS = [1.0, 1.84, 2.68, 3.92, 5.72]
# Iterative preset: the same sizes minus the demo mesh; 2 ranks at the largest. On an idle
# 2-core machine the whole run takes ~13 min; with other jobs on the cores it can take 2-3x
# that (then --iterative-factors 1.84,2.68,3.92 keeps it near 15 min).
FULL_ITERATIVE_FACTORS = [1.84, 2.68, 3.92, 5.72]
FULL_ITERATIVE_PARALLEL = 5.72
QUICK_FACTORS = [0.75, 1.0, 1.45]           # ~6k, 9k, 17k DOFs
# Candidate fixes of the iterative preset, measured (not applied) on one size.
VARIANT_FACTOR = 2.68
VARIANTS = {
    "mech_bs": {
        "preset": "iterative", "blocked_mech": True, "options": {}, "all_sizes": True, "two_ranks": True,
        "text": "displacement split with block size = dim (BoomerAMG sees 2 unknowns per node)"},
    "mech_bs_mumps": {
        "preset": "iterative", "blocked_mech": True, "all_sizes": True, "two_ranks": True,
        "options": {"fieldsplit_chem_sub_pc_factor_mat_solver_type": "mumps"},
        "text": "as mech_bs + MUMPS (not PETSc's LU) for the ASM subdomain LU of the eta/c/phi block"},
    "mech_bs_ew": {
        "preset": "iterative", "blocked_mech": True, "options": {"snes_ksp_ew": None}, "all_sizes": False,
        "text": "as mech_bs + Eisenstat-Walker linear tolerances (-snes_ksp_ew)"},
    "lag_pc": {
        "preset": "direct", "blocked_mech": False, "options": {"snes_lag_preconditioner": 2},
        "all_sizes": False,
        "text": "re-factorise every 2nd Newton iteration (-snes_lag_preconditioner 2)"},
}
# After the timed steps, the smallest direct case continues with the adaptive controller
# (paper defaults of config.TimeStepping, from the benchmark's dt) for a while: how fast
# does dt grow, how many attempts are rejected? Feeds the paper-case estimate.
ADAPTIVE_PROBE = {"max_attempts": 100, "max_wall_s": 180.0}
QUICK_ADAPTIVE_PROBE = {"max_attempts": 30, "max_wall_s": 30.0}

# PETSc events reported in the profile (top-level ones are not nested in each other except
# where PETSc nests them: PCSetUp/PCApply/MatLUFactorNum inside SNESSolve, etc.).
EVENTS = ["SNESSolve", "SNESFunctionEval", "SNESJacobianEval", "SNESLineSearch", "KSPSolve", "KSPSetUp",
          "PCSetUp", "PCSetUpOnBlocks", "PCApply", "MatLUFactorSym", "MatLUFactorNum", "MatSolve", "MatMult",
          "MatCreateSubMats", "MatCreateSubMat", "MatGetOrdering", "KSPGMRESOrthog", "MatAssemblyBegin",
          "MatAssemblyEnd", "MatZeroEntries", "VecMDot", "VecMAXPY", "VecScatterBegin"]

# Result keys every case returns (the smoke test checks them).
RESULT_KEYS = [
    "id", "preset", "ranks", "h_factor", "steps", "dt", "dofs", "cells", "converged",
    "newton_per_step", "linear_per_newton", "step_wall_s", "step_cpu_s", "newton_wall_s",
    "assembly_s", "linear_s", "return_map_s", "commit_s", "other_s",
    "maxrss_mb", "maxrss_base_mb", "bytes_per_dof", "poisson", "petsc_events", "timings",
]


# =========================================================================== one case

def case_config(case: dict):
    """The Config of a case: BASE_CASE with mesh sizes / h_factor and the solver preset."""
    from .config import parse_config
    data = json.loads(json.dumps(BASE_CASE))
    f = float(case["h_factor"])
    data["mesh"] = {k: v / f for k, v in BASE_MESH_M.items()}
    data["mesh"]["cache_dir"] = str(case.get("mesh_cache", MESH_CACHE))
    data["solver"] = {"preset": case["preset"]}
    data["solver"].update(case.get("solver", {}))
    if "plasticity" in case:
        data["mechanics"]["plasticity"] = bool(case["plasticity"])
    return parse_config(data)


def _maxrss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


class _Clock:
    """Accumulated wall and CPU time of wrapped callables."""

    def __init__(self):
        self.wall, self.cpu, self.calls = {}, {}, {}

    def wrap(self, name, fn):
        self.wall.setdefault(name, 0.0)
        self.cpu.setdefault(name, 0.0)
        self.calls.setdefault(name, 0)

        def timed(*args, **kwargs):
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.wall[name] += time.perf_counter() - w0
                self.cpu[name] += time.process_time() - c0
                self.calls[name] += 1
        return timed


_stage_count = 0


def _new_stage(name):
    global _stage_count
    from petsc4py import PETSc
    _stage_count += 1
    return PETSc.Log.Stage(f"{name}_{_stage_count}")


def _events(stage_id, comm) -> dict:
    from mpi4py import MPI
    from petsc4py import PETSc
    out = {}
    for name in EVENTS:
        info = PETSc.Log.Event(name).getPerfInfo(stage_id)
        t = comm.allreduce(float(info["time"]), op=MPI.MAX)
        n = comm.allreduce(int(info["count"]), op=MPI.MAX)
        if n > 0:
            out[name] = {"time": t, "count": n}
    return out


def _min_time(fn, repeats, comm):
    """Smallest wall/CPU time (max over ranks) of ``repeats`` calls of fn()."""
    from mpi4py import MPI
    best_w = best_c = math.inf
    for _ in range(repeats):
        comm.barrier()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        best_w = min(best_w, comm.allreduce(w, op=MPI.MAX))
        best_c = min(best_c, comm.allreduce(c, op=MPI.MAX))
    return best_w, best_c


def poisson_baseline(mesh, facet_tags, repeats=3) -> dict:
    """Scalar P1 Poisson on ``mesh`` (u = 0 on the left and right faces, f = 1): CG with
    BoomerAMG, rtol 1e-8. Times one complete solve (matrix + vector assembly, AMG setup,
    CG), the best of ``repeats``, after a warm-up solve (JIT excluded)."""
    import numpy as np
    import ufl
    from dolfinx import fem
    from dolfinx.fem import petsc as fem_petsc
    from mpi4py import MPI
    from petsc4py import PETSc

    from .mesh import LEFT, RIGHT

    comm = mesh.comm
    V = fem.functionspace(mesh, ("Lagrange", 1))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = fem.form(ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx)
    L = fem.form(fem.Constant(mesh, PETSc.ScalarType(1.0)) * v * ufl.dx)
    facets = np.concatenate([facet_tags.find(LEFT), facet_tags.find(RIGHT)])
    dofs = fem.locate_dofs_topological(V, mesh.topology.dim - 1, facets)
    bc = fem.dirichletbc(PETSc.ScalarType(0.0), dofs, V)
    A = fem_petsc.create_matrix(a)
    b = fem_petsc.create_vector(L)
    uh = fem.Function(V)
    ksp = PETSc.KSP().create(comm)
    ksp.setOptionsPrefix("nzsp_bench_poisson_")
    opts = PETSc.Options()
    for k, val in {"ksp_type": "cg", "ksp_rtol": 1e-8, "pc_type": "hypre", "pc_hypre_type": "boomeramg"}.items():
        opts["nzsp_bench_poisson_" + k] = val
    ksp.setFromOptions()
    its = []
    parts = {"assemble": [], "solve": []}

    def assemble():
        A.zeroEntries()
        fem_petsc.assemble_matrix(A, a, bcs=[bc])
        A.assemble()
        with b.localForm() as bl:
            bl.set(0.0)
        fem_petsc.assemble_vector(b, L)
        fem_petsc.apply_lifting(b, [a], bcs=[[bc]])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        fem_petsc.set_bc(b, [bc])

    def solve():
        ksp.setOperators(A)  # a new operator: the AMG hierarchy is rebuilt, as in a real solve
        uh.x.petsc_vec.set(0.0)
        ksp.solve(b, uh.x.petsc_vec)
        its.append(ksp.getIterationNumber())

    def full():
        w0 = time.perf_counter()
        assemble()
        w1 = time.perf_counter()
        solve()
        parts["assemble"].append(w1 - w0)
        parts["solve"].append(time.perf_counter() - w1)

    full()  # warm-up
    wall, cpu = _min_time(full, repeats, comm)
    reason = ksp.getConvergedReason()
    nnz = A.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_used"]
    out = {
        "nnz": int(nnz),
        "dofs": V.dofmap.index_map.size_global,
        "wall_s": wall, "cpu_s": cpu,
        "assemble_s": comm.allreduce(min(parts["assemble"][1:]), op=MPI.MAX),
        "solve_s": comm.allreduce(min(parts["solve"][1:]), op=MPI.MAX),
        "iterations": its[-1], "converged": reason > 0,
    }
    ksp.destroy()
    A.destroy()
    b.destroy()
    return out


def adaptive_probe(pb, t, dt, commit, max_attempts=60, max_wall_s=150.0) -> dict:
    """Continue from (t, dt) with the adaptive StepController and the paper defaults of
    config.TimeStepping (t_end, dt_max, growth, outputs); record every attempt."""
    from mpi4py import MPI

    from .config import Config
    from .timestepping import StepController
    comm = pb.comm
    ctl = StepController.from_config(Config().time, dt=dt)
    attempts, t0, w_start = [], t, time.perf_counter()
    while not ctl.finished(t) and len(attempts) < max_attempts:
        if comm.allreduce(time.perf_counter() - w_start, op=MPI.MAX) > max_wall_s:
            break
        step_dt, landed = ctl.propose(t)
        report = pb.try_step(t, step_dt)
        attempts.append({"t": t, "dt": step_dt, "newton": report.newton_iterations,
                         "converged": bool(report.converged), "reason": report.reason_name})
        if report.converged:
            commit()
            t += step_dt
            ctl.accepted(report.newton_iterations, step_dt, landed)
        elif not ctl.failed(step_dt):
            break
    acc = [a for a in attempts if a["converged"]]
    return {"t_start": t0, "t_end": t, "dt_start": dt, "dt_end": ctl.dt, "accepted": len(acc),
            "rejected": len(attempts) - len(acc), "attempts": attempts,
            "newton_per_attempt": sum(a["newton"] for a in attempts) / max(len(attempts), 1),
            "newton_per_accepted": sum(a["newton"] for a in acc) / max(len(acc), 1),
            "wall_s": comm.allreduce(time.perf_counter() - w_start, op=MPI.MAX)}


def _variant_config(case: dict):
    """Config of a candidate-fix variant. With ``blocked_mech`` the iterative preset's options
    are passed as petsc_options on top of the direct preset, so that CoupledProblem does not
    set the field split itself (_variant_fieldsplit does)."""
    from .problem import solver_options
    if case["variant"] not in VARIANTS:
        raise ValueError(f"unknown variant {case['variant']!r}; known: {', '.join(VARIANTS)}")
    v = VARIANTS[case["variant"]]
    base = {k: val for k, val in case.items() if k != "variant"}
    if not v["blocked_mech"]:
        return case_config(dict(base, preset=v["preset"], solver={"petsc_options": dict(v["options"])}))
    opts = solver_options(case_config(dict(base, preset="iterative")))
    opts = {k: val for k, val in opts.items() if not k.startswith("snes_")}
    opts.update(v["options"])
    return case_config(dict(base, preset="direct", solver={"petsc_options": opts}))


def _variant_fieldsplit(pb) -> None:
    """The iterative preset's field split, with block size = dim on the displacement split.
    In DOLFINx's mixed-space numbering the components of a node's displacement are
    consecutive, so the sorted displacement dofs form blocks of dim."""
    import numpy as np
    from petsc4py import PETSc

    from .problem import CONC, DISP, ETA, PHI
    imap = pb.W.dofmap.index_map
    n_owned, offset = imap.size_local * pb.W.dofmap.index_map_bs, imap.local_range[0] * pb.W.dofmap.index_map_bs

    def owned(idx):
        idx = np.sort(np.asarray(idx))
        return (idx[idx < n_owned] + offset).astype(PETSc.IntType)

    chem = owned(np.concatenate([pb.subspaces[s][1] for s in (ETA, CONC, PHI)]))
    pairs = np.asarray(pb.subspaces[DISP][1]).reshape(-1, pb.dim)
    if not np.all(np.diff(pairs, axis=1) == 1):
        raise RuntimeError("displacement components of a node are not consecutive; cannot block the split")
    mech = owned(pairs.ravel())
    is_mech = PETSc.IS().createGeneral(mech, comm=pb.comm)
    is_mech.setBlockSize(pb.dim)
    pc = pb.solver.snes.getKSP().getPC()
    pc.setFieldSplitIS(("chem", PETSc.IS().createGeneral(chem, comm=pb.comm)), ("mech", is_mech))


def _elastic_twin(cfg, poly):
    from .config import parse_config
    from .problem import CoupledProblem
    data = cfg.model_dump()
    data["mechanics"]["plasticity"] = False
    return CoupledProblem(parse_config(data), poly)


def _assembly_times(problem, repeats, comm) -> tuple[float, float]:
    """Best wall time of one residual and one Jacobian assembly at the current state."""
    s = problem.solver
    x = s.x
    problem.w.x.petsc_vec.copy(x)
    t_res, _ = _min_time(lambda: s._residual(s.snes, x, s.b), repeats, comm)
    t_jac, _ = _min_time(lambda: s._jacobian(s.snes, x, s.A, s.A), repeats, comm)
    return t_res, t_jac


def run_case(case: dict, comm=None, log=None) -> dict:
    """Run one benchmark case in this process (collective); the same dict on every rank.

    case keys: preset ("direct"/"iterative"), h_factor, steps, dt; optional: id, ranks
    (informational), return_map (default True), poisson (default True), poisson_repeats,
    adaptive_probe ({max_attempts, max_wall_s}), profile (cProfile), log_view (path of a -log_view
    text), solver (extra solver keys).
    """
    import cProfile
    import io
    import pstats

    from mpi4py import MPI
    from petsc4py import PETSc

    comm = comm or MPI.COMM_WORLD
    rss_base = _maxrss_mb()
    if not PETSc.Log.isActive():
        PETSc.Log.begin()

    import dolfinx

    from .mesh import build_polycrystal
    from .problem import CoupledProblem
    from .run import polycrystal_spec

    def say(msg):
        if log is not None and comm.rank == 0:
            log(msg)

    steps, dt = int(case.get("steps", STEPS)), float(case.get("dt", DT))
    timings = {}
    variant = case.get("variant")
    cfg = case_config(case) if not variant else _variant_config(case)

    comm.barrier()
    w0 = time.perf_counter()
    poly = build_polycrystal(polycrystal_spec(cfg), comm, cache_dir=cfg.mesh.cache_dir)
    timings["mesh_s"] = comm.allreduce(time.perf_counter() - w0, op=MPI.MAX)
    w0 = time.perf_counter()
    pb = CoupledProblem(cfg, poly)
    if variant and VARIANTS[variant]["blocked_mech"]:
        _variant_fieldsplit(pb)
    timings["setup_s"] = comm.allreduce(time.perf_counter() - w0, op=MPI.MAX)
    w0 = time.perf_counter()
    pb.initialize()
    timings["initialize_s"] = comm.allreduce(time.perf_counter() - w0, op=MPI.MAX)
    dofs = pb.dofs
    cells = poly.mesh.topology.index_map(poly.mesh.topology.dim).size_global
    say(f"{case.get('id', '')}: {dofs} dofs, {cells} cells; setup {timings['setup_s']:.1f} s, "
        f"initialize {timings['initialize_s']:.1f} s")

    # Instrument from outside: re-register the SNES callbacks through timers.
    clock = _Clock()
    s = pb.solver
    s.snes.setFunction(clock.wrap("residual", s._residual), s.b)
    s.snes.setJacobian(clock.wrap("jacobian", s._jacobian), s.A, s.A)
    s.solve = clock.wrap("snes", s.solve)
    if pb.plastic is not None:
        pb.plastic.commit = clock.wrap("plastic_commit", pb.plastic.commit)
    commit = clock.wrap("commit", pb.commit)

    stage = _new_stage("bench_steps")
    profiler = cProfile.Profile() if case.get("profile") and comm.rank == 0 else None
    per_step = []
    t = 0.0
    converged = True
    comm.barrier()
    stage.push()
    if profiler:
        profiler.enable()
    for k in range(steps):
        comm.barrier()
        w0, c0 = time.perf_counter(), time.process_time()
        report = pb.try_step(t, dt)
        if report.converged:
            commit()
            t += dt
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        per_step.append({"wall_s": comm.allreduce(wall, op=MPI.MAX), "cpu_s": comm.allreduce(cpu, op=MPI.MAX),
                         "newton": report.newton_iterations, "linear": report.linear_iterations,
                         "converged": bool(report.converged), "reason": report.reason_name})
        say(f"  step {k + 1}/{steps}: {per_step[-1]['wall_s']:.2f} s, newton {report.newton_iterations}, "
            f"linear {report.linear_iterations}, {report.reason_name}")
        if not report.converged:
            converged = False
            break
    if profiler:
        profiler.disable()
    stage.pop()

    rss_ranks = comm.allgather(_maxrss_mb())
    rss_base_ranks = comm.allgather(rss_base)
    events = _events(stage.id, comm)
    n = len(per_step)

    def gmax(x):
        return comm.allreduce(x, op=MPI.MAX)

    wall_steps = sum(p["wall_s"] for p in per_step)
    cpu_steps = sum(p["cpu_s"] for p in per_step)
    newton = sum(p["newton"] for p in per_step)
    linear = sum(p["linear"] for p in per_step)
    asm_wall = gmax(clock.wall["residual"] + clock.wall["jacobian"])
    asm_cpu = gmax(clock.cpu["residual"] + clock.cpu["jacobian"])
    snes_wall = gmax(clock.wall["snes"])
    snes_cpu = gmax(clock.cpu["snes"])
    commit_wall = gmax(clock.wall["commit"])
    plastic_commit = gmax(clock.wall.get("plastic_commit", 0.0))
    linear_wall = max(0.0, snes_wall - asm_wall)
    linear_cpu = max(0.0, snes_cpu - asm_cpu)
    n_res, n_jac = clock.calls["residual"], clock.calls["jacobian"]

    result = {
        "id": case.get("id", f"{case['preset']}-h{case['h_factor']}-np{comm.size}"), "variant": variant,
        "preset": case["preset"], "ranks": comm.size, "h_factor": float(case["h_factor"]),
        "steps": steps, "steps_done": n, "dt": dt, "dofs": dofs, "cells": cells,
        "dofs_per_rank": dofs / comm.size, "converged": converged, "per_step": per_step,
        "newton_per_step": newton / max(n, 1),
        "linear_per_newton": linear / max(newton, 1),
        "step_wall_s": wall_steps / max(n, 1),
        "step_cpu_s": cpu_steps / max(n, 1),
        "newton_wall_s": wall_steps / max(newton, 1),
        "newton_cpu_s": cpu_steps / max(newton, 1),
        "assembly_s": asm_wall / max(n, 1),
        "assembly_cpu_s": asm_cpu / max(n, 1),
        "linear_s": linear_wall / max(n, 1),
        "linear_cpu_s": linear_cpu / max(n, 1),
        "commit_s": commit_wall / max(n, 1),
        "plastic_commit_s": plastic_commit / max(n, 1),
        "other_s": max(0.0, wall_steps - snes_wall - commit_wall) / max(n, 1),
        "residual_calls_per_step": n_res / max(n, 1),
        "jacobian_calls_per_step": n_jac / max(n, 1),
        "maxrss_mb_ranks": rss_ranks,
        "maxrss_mb": max(rss_ranks),
        "maxrss_base_mb": max(rss_base_ranks),
        "maxrss_sum_mb": sum(rss_ranks),
        "bytes_per_dof": sum(rss_ranks) * 2**20 / dofs,
        "incremental_bytes_per_dof": (sum(rss_ranks) - sum(rss_base_ranks)) * 2**20 / dofs,
        "petsc_events": events,
        "jacobian_nnz": int(s.A.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_used"]),
        "timings": timings,
        "versions": {"dolfinx": dolfinx.__version__, "petsc": ".".join(map(str, PETSc.Sys.getVersion())),
                     "python": platform.python_version()},
    }

    if profiler is not None:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(12)
        result["cprofile_top"] = buf.getvalue()
    log_view = case.get("log_view")
    if log_view:
        viewer = PETSc.Viewer().createASCII(str(log_view), comm=comm)
        PETSc.Log.view(viewer)
        viewer.destroy()
        result["log_view"] = str(log_view)

    # Return mapping: plastic minus elastic assembly at the same state, same mesh.
    result["return_map_s"] = None
    if case.get("return_map", True) and pb.plastic is not None:
        w0 = time.perf_counter()
        twin = _elastic_twin(cfg, poly)
        twin.w.x.array[:] = pb.w.x.array
        twin.w_old.x.array[:] = pb.w_old.x.array
        repeats = int(case.get("assembly_repeats", 3))
        pl_res, pl_jac = _assembly_times(pb, repeats, comm)
        el_res, el_jac = _assembly_times(twin, repeats, comm)
        twin.solver.destroy()
        del twin
        per_step_rm = (max(0.0, pl_res - el_res) * n_res + max(0.0, pl_jac - el_jac) * n_jac) / max(n, 1)
        result["return_map_s"] = per_step_rm + result["plastic_commit_s"]
        result["assembly_probe"] = {"plastic_residual_s": pl_res, "plastic_jacobian_s": pl_jac,
                                    "elastic_residual_s": el_res, "elastic_jacobian_s": el_jac,
                                    "wall_s": gmax(time.perf_counter() - w0)}
        say(f"  assembly plastic {pl_res:.3f}/{pl_jac:.3f} s, elastic {el_res:.3f}/{el_jac:.3f} s (F/J)")

    result["poisson"] = None
    if case.get("poisson", True):
        result["poisson"] = poisson_baseline(poly.mesh, poly.facet_tags, int(case.get("poisson_repeats", 3)))
        p = result["poisson"]
        result["newton_over_poisson"] = result["newton_wall_s"] / p["wall_s"]
        result["newton_over_poisson_cpu"] = result["newton_cpu_s"] / p["cpu_s"] if p["cpu_s"] > 0 else None
        say(f"  Poisson {p['dofs']} dofs: {p['wall_s']:.3f} s ({p['iterations']} CG its); "
            f"Newton iteration = {result['newton_over_poisson']:.1f} x Poisson")

    result["adaptive_probe"] = None
    if case.get("adaptive_probe") and converged:
        result["adaptive_probe"] = adaptive_probe(pb, t, dt, commit, **case["adaptive_probe"])
        ap = result["adaptive_probe"]
        say(f"  adaptive probe: {ap['accepted']} accepted / {ap['rejected']} rejected, t {ap['t_start']:.3g} -> "
            f"{ap['t_end']:.3g} s, dt -> {ap['dt_end']:.3g} s")
    s.destroy()
    return result


# =========================================================================== driver

def _case(preset, h, ranks, steps, dt, **extra) -> dict:
    c = {"id": f"{preset}-h{h:g}-np{ranks}", "preset": preset, "h_factor": h, "ranks": ranks,
         "steps": steps, "dt": dt}
    c.update(extra)
    return c


def plan(quick: bool, steps: int, dt: float, factors=None, iterative_factors=None,
         variants: bool | None = None) -> list[dict]:
    """Cases of a run: every size for both presets on 1 rank, the largest on 2 ranks (the
    iterative preset: FULL_ITERATIVE_PARALLEL in a full run), the adaptive probe on the demo
    mesh (h_factor 1) or the smallest, and (full run) the candidate fixes of VARIANTS."""
    factors = sorted(factors or (QUICK_FACTORS if quick else FULL_FACTORS))
    default_it = factors if (quick or factors != FULL_FACTORS) else FULL_ITERATIVE_FACTORS
    it_factors = sorted(iterative_factors or default_it)
    probe_h = 1.0 if 1.0 in factors else factors[0]
    cases = []
    for h in factors:
        extra = {"adaptive_probe": QUICK_ADAPTIVE_PROBE if quick else ADAPTIVE_PROBE} if h == probe_h else {}
        cases.append(_case("direct", h, 1, steps, dt, **extra))
    for h in it_factors:
        cases.append(_case("iterative", h, 1, steps, dt))
    cases.append(_case("direct", max(factors), 2, steps, dt))
    it_par = FULL_ITERATIVE_PARALLEL if (not quick and FULL_ITERATIVE_PARALLEL in it_factors) else max(it_factors)
    cases.append(_case("iterative", it_par, 2, steps, dt))
    if variants if variants is not None else not quick:
        for name, v in VARIANTS.items():
            fs = factors if v["preset"] == "direct" else it_factors
            mid = VARIANT_FACTOR if VARIANT_FACTOR in fs else fs[len(fs) // 2]
            runs = [(h, 1) for h in (fs if v["all_sizes"] else [mid])]
            if v.get("two_ranks"):
                runs.append((it_par if v["preset"] == "iterative" else max(factors), 2))
            for h, ranks in runs:
                c = _case(v["preset"], h, ranks, steps, dt, variant=name, return_map=False, poisson=False)
                c["id"] += "-" + name
                cases.append(c)
    # Profile the largest 1-rank case of each preset.
    for preset, fs in (("direct", factors), ("iterative", it_factors)):
        for c in cases:
            if c["preset"] == preset and c["ranks"] == 1 and c["h_factor"] == max(fs) and not c.get("variant"):
                c["profile"] = True
                c["log_view"] = str(SCRATCH / "logs" / f"{c['id']}.log_view.txt")
    return cases


def run_subprocess(case: dict, timeout: float, log) -> dict:
    out = SCRATCH / "results" / f"{case['id']}.json"
    logfile = SCRATCH / "logs" / f"{case['id']}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    cmd = ["mpirun", "-n", str(case["ranks"]), sys.executable, "-m", "nzsp_fem.bench",
           "--case", json.dumps(case), "--out", str(out)]
    log(f"[{case['id']}] " + " ".join(cmd[:4]) + " ... (log: " + str(logfile.relative_to(REPO)) + ")")
    w0 = time.perf_counter()
    with open(logfile, "w") as fh:
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - w0
    if rc == 0 and out.exists():
        result = json.loads(out.read_text())
        result["process_wall_s"] = wall
        log(f"[{case['id']}] done in {wall:.0f} s: {result['dofs']} dofs, {result['step_wall_s']:.2f} s/step")
        return result
    tail = logfile.read_text()[-2000:] if logfile.exists() else ""
    log(f"[{case['id']}] FAILED ({rc}) after {wall:.0f} s:\n{tail}")
    return {"id": case["id"], "preset": case["preset"], "ranks": case["ranks"], "h_factor": case["h_factor"],
            "failed": str(rc), "process_wall_s": wall}


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
        mem = next(int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "cores_usable": affinity, "mem_mb": mem,
            "loadavg": list(os.getloadavg()), "host": platform.node(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": _git_commit()}


# --------------------------------------------------------------------------- analysis

def fit_slope(xs, ys):
    """Least-squares slope of log y against log x."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sxx if sxx > 0 else None


def controller_steps(newton_per_step: float, time_cfg=None, t: float = 0.0, dt: float | None = None,
                     until: float | None = None) -> int:
    """Accepted steps the adaptive controller needs from (t, dt) to ``until`` (default t_end) if
    every step is accepted with ``newton_per_step`` Newton iterations; time settings default to
    the paper defaults of config.TimeStepping."""
    from .config import Config
    from .timestepping import StepController
    tc = time_cfg or Config().time
    ctl = StepController.from_config(tc, dt=dt)
    until = tc.t_end if until is None else until
    n = 0
    while not ctl.finished(t) and t < until * (1 - 1e-12) and n < 10**6:
        step_dt, landed = ctl.propose(t)
        ctl.accepted(int(round(newton_per_step)), step_dt, landed)
        t += step_dt
        n += 1
    return n


def _ok(results, variants=False):
    """Successful results; without the candidate-fix variants unless ``variants``."""
    return [r for r in results if "failed" not in r and (variants or not r.get("variant"))]


def analyse(results: list[dict]) -> dict:
    ok = _ok(results)
    a = {"growth": {}, "parallel": {}, "targets": []}
    for preset in ("direct", "iterative"):
        rows = sorted((r for r in ok if r["preset"] == preset and r["ranks"] == 1), key=lambda r: r["dofs"])
        if len(rows) >= 2:
            dofs = [r["dofs"] for r in rows]
            a["growth"][preset] = {
                "dofs": dofs,
                "slope_step_wall": fit_slope(dofs, [r["step_wall_s"] for r in rows]),
                "slope_step_cpu": fit_slope(dofs, [r["step_cpu_s"] for r in rows]),
                "slope_newton_wall": fit_slope(dofs, [r["newton_wall_s"] for r in rows]),
                "pairwise": [{"from": r0["dofs"], "to": r1["dofs"],
                              "dof_ratio": r1["dofs"] / r0["dofs"],
                              "time_ratio": r1["step_wall_s"] / r0["step_wall_s"],
                              "cpu_ratio": r1["step_cpu_s"] / r0["step_cpu_s"],
                              "excess": (r1["step_wall_s"] / r0["step_wall_s"]) / (r1["dofs"] / r0["dofs"]),
                              "excess_cpu": (r1["step_cpu_s"] / r0["step_cpu_s"]) / (r1["dofs"] / r0["dofs"])}
                             for r0, r1 in zip(rows, rows[1:])],
            }
        for r2 in (r for r in ok if r["preset"] == preset and r["ranks"] == 2):
            r1 = next((r for r in ok if r["preset"] == preset and r["ranks"] == 1
                       and r["h_factor"] == r2["h_factor"]), None)
            if r1:
                a["parallel"][preset] = {
                    "dofs": r2["dofs"], "t1": r1["step_wall_s"], "t2": r2["step_wall_s"],
                    "speedup": r1["step_wall_s"] / r2["step_wall_s"],
                    "efficiency": r1["step_wall_s"] / (2 * r2["step_wall_s"]),
                    "efficiency_newton": r1["newton_wall_s"] / (2 * r2["newton_wall_s"]),
                    "c1": r1["step_cpu_s"], "c2": r2["step_cpu_s"],
                    "efficiency_cpu": r1["step_cpu_s"] / (2 * r2["step_cpu_s"]),
                    "newton_1": r1["newton_per_step"], "newton_2": r2["newton_per_step"],
                    "linear_1": r1["linear_per_newton"], "linear_2": r2["linear_per_newton"]}
    return a


# --------------------------------------------------------------------------- report

def _f(x, fmt=".3g"):
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "-"
    return format(x, fmt)


def _pct(part, whole):
    return "-" if part is None or not whole else f"{100 * part / whole:.0f} %"


CSV_COLUMNS = [
    "id", "variant", "preset", "ranks", "h_factor", "dofs", "cells", "steps", "dt", "converged",
    "newton_per_step", "linear_per_newton", "step_wall_s", "step_cpu_s", "newton_wall_s", "newton_cpu_s",
    "assembly_s", "linear_s", "return_map_s", "commit_s", "other_s",
    "pcsetup_s", "residual_calls_per_step", "jacobian_calls_per_step",
    "maxrss_mb", "maxrss_sum_mb", "maxrss_base_mb", "bytes_per_dof", "incremental_bytes_per_dof",
    "poisson_dofs", "poisson_wall_s", "poisson_cpu_s", "poisson_iterations", "newton_over_poisson",
    "newton_over_poisson_cpu", "setup_s", "initialize_s", "failed",
]


def _row(r) -> dict:
    row = {k: r.get(k) for k in CSV_COLUMNS}
    p = r.get("poisson") or {}
    row.update({"poisson_dofs": p.get("dofs"), "poisson_wall_s": p.get("wall_s"), "poisson_cpu_s": p.get("cpu_s"),
                "poisson_iterations": p.get("iterations")})
    ev = r.get("petsc_events") or {}
    steps = r.get("steps_done") or r.get("steps") or 1
    if "PCSetUp" in ev:
        row["pcsetup_s"] = ev["PCSetUp"]["time"] / steps
    t = r.get("timings") or {}
    row["setup_s"], row["initialize_s"] = t.get("setup_s"), t.get("initialize_s")
    return row


def write_csv(path: Path, results: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in results:
            row = _row(r)
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _events_table(r) -> list[str]:
    ev = r.get("petsc_events") or {}
    total = ev.get("SNESSolve", {}).get("time")
    steps = r.get("steps_done") or 1
    lines = [f"Case `{r['id']}` ({r['dofs']} DOFs, {r['ranks']} rank(s)), time-step stage only:", "",
             "| PETSc event | count | time (s, all steps) | per step (s) | share of SNESSolve |",
             "|---|---:|---:|---:|---:|"]
    for name in EVENTS:
        if name in ev and ev[name]["time"] > 0.005 * (total or 1):
            e = ev[name]
            lines.append(f"| {name} | {e['count']} | {e['time']:.3f} | {e['time'] / steps:.3f} | "
                         f"{_pct(e['time'], total)} |")
    return lines


def dominant_summary(r) -> str:
    """One sentence on what dominates a case's step."""
    step = r["step_wall_s"]
    parts = {"linear solve (KSPSolve + PCSetUp)": r["linear_s"], "assembly (residual + Jacobian)": r["assembly_s"],
             "commit / other": (r.get("commit_s") or 0) + (r.get("other_s") or 0)}
    name, val = max(parts.items(), key=lambda kv: kv[1])
    ev = r.get("petsc_events") or {}
    extra = ""
    steps = r.get("steps_done") or 1
    if r["preset"] == "direct":
        if "PCSetUp" in ev:
            extra = f"; PCSetUp alone {_pct(ev['PCSetUp']['time'] / steps, step)}"
        if "MatLUFactorNum" in ev:
            extra += f" (MUMPS numeric LU factorisation {_pct(ev['MatLUFactorNum']['time'] / steps, step)})"
    else:
        if "KSPSolve" in ev:
            extra = (f"; KSPSolve {_pct(ev['KSPSolve']['time'] / steps, step)} ({r['linear_per_newton']:.0f} "
                     "FGMRES iterations per Newton step)")
        if "PCApply" in ev:
            extra += f", of which preconditioner applications {_pct(ev['PCApply']['time'] / steps, step)}"
        if "MatLUFactorNum" in ev:
            extra += (f"; the LU factorisation of the ASM subdomain(s) of the eta/c/phi block "
                      f"{_pct(ev['MatLUFactorNum']['time'] / steps, step)}")
    return f"`{r['id']}`: {name} is {_pct(val, step)} of the step{extra}."


def diagnosis(results) -> str:
    """Data-driven reading of the candidate fixes at the largest size they were run on (1 rank)."""
    ok = _ok(results)
    var = [r for r in _ok(results, variants=True) if r.get("variant") and r["ranks"] == 1]
    out = []
    for name in ("mech_bs", "mech_bs_mumps"):
        rows = [r for r in var if r["variant"] == name]
        if not rows:
            continue
        v = max(rows, key=lambda r: r["dofs"])
        base = next((b for b in ok if b["preset"] == "iterative" and b["ranks"] == 1 and b["h_factor"] == v["h_factor"]),
                    None)
        direct = next((b for b in ok if b["preset"] == "direct" and b["ranks"] == 1 and b["h_factor"] == v["h_factor"]),
                      None)
        if not base:
            continue
        if name == "mech_bs":
            out.append(f"Iterative preset: the Krylov iterations come from the displacement block. Its index set has "
                       f"no block size, so BoomerAMG treats u_x and u_y as unrelated scalars; with block size "
                       f"{'2'} (`mech_bs`) the FGMRES iterations per Newton step drop from "
                       f"{base['linear_per_newton']:.0f} to {v['linear_per_newton']:.0f} at {v['dofs']} DOFs and the "
                       f"step from {base['step_wall_s']:.1f} to {v['step_wall_s']:.1f} s.")
        else:
            ev = v.get("petsc_events") or {}
            lu = ev.get("MatLUFactorNum", {}).get("time", 0) / max(v.get("steps_done") or 1, 1)
            out.append(f"What is left is the LU of the eta/c/phi block (ASM with LU subdomains: on 1 rank one LU of "
                       f"the whole block, by PETSc's own LU): using MUMPS for it (`mech_bs_mumps`) gives "
                       f"{v['step_wall_s']:.1f} s per step ({base['step_wall_s'] / v['step_wall_s']:.1f}x faster than "
                       f"the preset"
                       + (f", {direct['step_wall_s'] / v['step_wall_s']:.1f}x faster than the direct preset" if direct else "")
                       + f"), of which LU factorisation {lu:.1f} s.")
            if len(rows) >= 2:
                rows = sorted(rows, key=lambda r: r["dofs"])
                slope = fit_slope([r["dofs"] for r in rows], [r["step_wall_s"] for r in rows])
                out.append(f"That LU still sets the growth: time per step ~ DOFs^{slope:.2f} with this fix.")
    return " ".join(out)


def variant_growth_note(results) -> str:
    """'; with <variant>: worst excess x.xx' for the 1-rank iterative variants run at >= 2 sizes."""
    notes = []
    var = [r for r in _ok(results, variants=True) if r.get("variant") and r["ranks"] == 1]
    for name in VARIANTS:
        rows = sorted((r for r in var if r["variant"] == name), key=lambda r: r["dofs"])
        if len(rows) >= 2 and VARIANTS[name]["preset"] == "iterative":
            worst = max((b["step_wall_s"] / a["step_wall_s"]) / (b["dofs"] / a["dofs"]) for a, b in zip(rows, rows[1:]))
            slope = fit_slope([r["dofs"] for r in rows], [r["step_wall_s"] for r in rows])
            notes.append(f"{name} {worst:.2f} (slope {slope:.2f})")
    return ("; with the candidate fixes (not applied), worst excess: " + ", ".join(notes)) if notes else ""


def write_markdown(path: Path, results: list[dict], info: dict, args_used: dict, fpt: dict) -> None:
    ok = sorted(_ok(results), key=lambda r: (r["preset"], r["ranks"], r["dofs"]))
    a = analyse(results)
    L = []
    add = L.append
    add("# Performance of the coupled solver")
    add("")
    add(f"Generated by `make bench` (`python3 -m nzsp_fem.bench{' --quick' if args_used['quick'] else ''}`) "
        f"on {info['date']}, commit `{info['commit']}`. Raw numbers: "
        f"[`{args_used['csv_name']}`]({args_used['csv_name']}); every case's JSON and log in "
        "`scratch/bench/` (not committed).")
    add("")
    v = next((r.get("versions") for r in ok if r.get("versions")), {})
    add(f"Machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{_f(info['mem_mb'], 'd') if info['mem_mb'] else '?'} MB RAM; DOLFINx {v.get('dolfinx', '?')}, "
        f"PETSc {v.get('petsc', '?')}, Python {v.get('python', '?')}. "
        f"Load average (1/5/15 min) at start {', '.join(f'{x:.1f}' for x in info['loadavg'])}, "
        f"at end {', '.join(f'{x:.1f}' for x in info['loadavg_end'])}; whole run {info['total_s'] / 60:.1f} min.")
    add("")
    ratios = sorted(r["step_wall_s"] / r["step_cpu_s"] for r in ok if r["ranks"] == 1 and r["step_cpu_s"] > 0)
    contention = ratios[len(ratios) // 2] if ratios else None
    if contention is not None and contention > 1.15:
        add(f"> **Shared machine, contended while this ran.** On 1 rank the wall time per step was a median "
            f"{contention:.1f}x the CPU time: other jobs took CPU from the benchmark, so wall times are inflated and "
            "noisy, and the 2-rank runs are hit hardest. The CPU-time columns are less affected. Re-run "
            "`make bench` on an idle machine before quoting absolute numbers.")
    else:
        add(f"> **Shared machine.** This ran on a 2-core machine shared with other jobs; during this run the cores "
            f"were not contended (1-rank wall time per step = {_f(contention, '.2f')}x CPU time, median), but "
            "absolute times vary from run to run (parallel efficiency 89-99 % in idle runs while this benchmark was "
            "developed), and much more when other jobs are active (a run under load average ~6 gave 2-3x longer "
            "wall times and 43 % parallel efficiency). Ratios (x Poisson, growth exponents) are the robust part.")
    add("")
    add("## Case")
    add("")
    add(f"The 2D polycrystal of `configs/demo.yaml` as of commit 540e097, frozen in `nzsp_fem/bench.py` "
        f"(1.2 x 0.8 um, 4 random grains (rng_seed 3), 30 nm GBs, two 60 nm nuclei on the electrode at y = 0.25 and "
        f"0.6 um plus a 40 nm Na layer, -0.45 V, mechanics + J2 plasticity, ln c, P1 everywhere: 5 DOFs per "
        f"vertex). Mesh sizes (grain/GB/nucleus 60/15/12 nm) are divided by `h_factor`. After `initialize()` every "
        f"case takes {args_used['steps']} steps of dt = {args_used['dt']:g} s from t = 0 (fixed; no adaptivity), so "
        "every size does the same physical work. Times are per accepted step unless marked per Newton iteration; "
        "wall times are the maximum over ranks.")
    add("")
    add("Split of a step: **assembly** = SNES residual + Jacobian callbacks (DOLFINx assembly incl. the "
        "return-mapping arithmetic in the kernels); **linear** = the rest of SNESSolve (PETSc KSPSolve + PCSetUp); "
        "**return map** = (plastic - elastic) assembly time at the same state x the number of assemblies, plus "
        "`PlasticState.commit` (measured with a second CoupledProblem with plasticity off; it is *contained* in "
        "assembly, except the commit); **other** = the rest (commit, Python). **Poisson** = scalar P1 Poisson on "
        "the same mesh (u = 0 left/right, f = 1), CG + BoomerAMG to rtol 1e-8, assembly + AMG set-up + solve, best "
        "of 3; **x Poisson** = wall time of one coupled Newton iteration (step time / Newton iterations) over it.")
    add("")
    add("## Results")
    add("")
    add("| case | preset | ranks | DOFs | Newton/step | lin. its/Newton | step wall (s) | step CPU (s) | "
        "Newton it. (s) | assembly | linear | return map | other | peak RSS/rank (MB) | bytes/DOF (incr.) | "
        "Poisson DOFs | Poisson (s) | x Poisson |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in ok:
        p = r.get("poisson") or {}
        add(f"| `{r['id']}` | {r['preset']} | {r['ranks']} | {r['dofs']} | {r['newton_per_step']:.2f} | "
            f"{r['linear_per_newton']:.1f} | {r['step_wall_s']:.2f} | {r['step_cpu_s']:.2f} | "
            f"{r['newton_wall_s']:.3f} | {_pct(r['assembly_s'], r['step_wall_s'])} | "
            f"{_pct(r['linear_s'], r['step_wall_s'])} | {_pct(r.get('return_map_s'), r['step_wall_s'])} | "
            f"{_pct(r['other_s'] + r['commit_s'], r['step_wall_s'])} | {r['maxrss_mb']:.0f} | "
            f"{r['bytes_per_dof']:.0f} ({r['incremental_bytes_per_dof']:.0f}) | {p.get('dofs', '-')} | "
            f"{_f(p.get('wall_s'))} | {_f(r.get('newton_over_poisson'), '.1f')} |")
    for r in results:
        if "failed" in r:
            add(f"| `{r['id']}` | {r['preset']} | {r['ranks']} | failed: {r['failed']} after "
                f"{r['process_wall_s']:.0f} s | | | | | | | | | | | | | | |")
    add("")
    add("Peak RSS is `getrusage` maxrss of each rank after the time steps (before the return-map and Poisson "
        "measurements); bytes/DOF = sum over ranks / DOFs, and in brackets the same without the RSS the process "
        f"had after importing DOLFINx (~{ok[0]['maxrss_base_mb']:.0f} MB per rank), which dominates the small cases."
        if ok else "")
    add("")
    bad = [r for r in ok if not r["converged"]]
    if bad:
        add("**Not converged:** " + ", ".join(f"`{r['id']}`" for r in bad) + " (times cover the steps done).")
        add("")
    add("Measured split (seconds per step; return map is inside assembly except the commit):")
    add("")
    add("| case | assembly (s) | of it return map (s) | linear (s) | PCSetUp (s) | F / J evaluations per step | "
        "setup (s) | initialize (s) |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in ok:
        row = _row(r)
        add(f"| `{r['id']}` | {r['assembly_s']:.3f} | {_f(r.get('return_map_s'))} | {r['linear_s']:.3f} | "
            f"{_f(row.get('pcsetup_s'))} | {r['residual_calls_per_step']:.1f} / {r['jacobian_calls_per_step']:.1f} | "
            f"{_f(row['setup_s'])} | {_f(row['initialize_s'])} |")
    add("")

    var = [r for r in _ok(results, variants=True) if r.get("variant")]
    if var:
        add("## Candidate fixes (measured here, not applied)")
        add("")
        add("Same case and steps; the preset's options unchanged except as stated. Evidence for changes "
            "to `problem.py` (`_field_index_set` / `solver_options`), which this benchmark does not modify.")
        add("")
        add("| case | change | ranks | DOFs | Newton/step | lin. its/Newton | step wall (s) | step CPU (s) | "
            "CPU vs preset |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for key in sorted({(VARIANTS[r["variant"]]["preset"], r["ranks"], r["h_factor"]) for r in var}):
            base = next((b for b in ok if (b["preset"], b["ranks"], b["h_factor"]) == key), None)
            if base:
                add(f"| `{base['id']}` | none ({key[0]} preset) | {key[1]} | {base['dofs']} | "
                    f"{base['newton_per_step']:.2f} | {base['linear_per_newton']:.1f} | {base['step_wall_s']:.2f} | "
                    f"{base['step_cpu_s']:.2f} | 1.00 |")
            for r in var:
                if (VARIANTS[r["variant"]]["preset"], r["ranks"], r["h_factor"]) != key:
                    continue
                add(f"| `{r['id']}` | {r['variant']}: {VARIANTS[r['variant']]['text']} | {r['ranks']} | {r['dofs']} | "
                    f"{r['newton_per_step']:.2f} | {r['linear_per_newton']:.1f} | {r['step_wall_s']:.2f} | "
                    f"{r['step_cpu_s']:.2f} | "
                    f"{_f(r['step_cpu_s'] / base['step_cpu_s'], '.2f') if base else '-'} |")
        add("")
        for name in VARIANTS:
            rows = sorted((r for r in var if r["variant"] == name and r["ranks"] == 1), key=lambda r: r["dofs"])
            if len(rows) >= 2:
                dofs = [r["dofs"] for r in rows]
                excess = [(b["step_wall_s"] / a["step_wall_s"]) / (b["dofs"] / a["dofs"]) for a, b in zip(rows, rows[1:])]
                excess_cpu = [(b["step_cpu_s"] / a["step_cpu_s"]) / (b["dofs"] / a["dofs"]) for a, b in zip(rows, rows[1:])]
                add(f"Growth with `{name}`: time per step ~ DOFs^{_f(fit_slope(dofs, [r['step_wall_s'] for r in rows]), '.2f')} "
                    f"(CPU ^{_f(fit_slope(dofs, [r['step_cpu_s'] for r in rows]), '.2f')}); step-time ratio / DOF "
                    f"ratio per size step: {', '.join(f'{x:.2f}' for x in excess)} (CPU "
                    f"{', '.join(f'{x:.2f}' for x in excess_cpu)}); linear iterations per Newton step "
                    f"{' -> '.join(format(r['linear_per_newton'], '.1f') for r in rows)}.")
                add("")

    add("## Growth with size (1 rank)")
    add("")
    for preset, g in a["growth"].items():
        add(f"**{preset}**: time per step ~ DOFs^{_f(g['slope_step_wall'], '.2f')} (wall; CPU "
            f"^{_f(g['slope_step_cpu'], '.2f')}), time per Newton iteration ~ DOFs^{_f(g['slope_newton_wall'], '.2f')} "
            f"(least-squares fit over {len(g['dofs'])} sizes).")
        add("")
        add("| DOFs | -> DOFs | DOF ratio | step-time ratio (wall) | excess = time ratio / DOF ratio (wall / CPU) |")
        add("|---:|---:|---:|---:|---:|")
        for pw in g["pairwise"]:
            add(f"| {pw['from']} | {pw['to']} | {pw['dof_ratio']:.2f} | {pw['time_ratio']:.2f} | "
                f"{pw['excess']:.2f} / {pw['excess_cpu']:.2f} |")
        add("")

    add("## Parallel efficiency (same case, 1 vs 2 ranks)")
    add("")
    if a["parallel"]:
        add("| preset | DOFs | step 1 rank (s) | step 2 ranks (s) | speed-up | efficiency (wall) | "
            "efficiency (per Newton it.) | CPU/step 1 / 2 ranks (s) | efficiency (CPU) | Newton/step 1 / 2 | "
            "lin. its/Newton 1 / 2 |")
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for preset, p in a["parallel"].items():
            add(f"| {preset} | {p['dofs']} | {p['t1']:.2f} | {p['t2']:.2f} | {p['speedup']:.2f} | "
                f"{100 * p['efficiency']:.0f} % | {100 * p['efficiency_newton']:.0f} % | {p['c1']:.2f} / {p['c2']:.2f} | "
                f"{100 * p['efficiency_cpu']:.0f} % | "
                f"{p['newton_1']:.2f} / {p['newton_2']:.2f} | {p['linear_1']:.1f} / {p['linear_2']:.1f} |")
        add("")
        add("Efficiency (wall) = T1 / (2 T2) with wall times; efficiency (CPU) uses each run's CPU time per step "
            "(max over ranks), which is what the wall time would be on otherwise idle cores (Open MPI polls while "
            "waiting, so waiting counts as CPU time and this is not flattering). With other jobs on the 2 cores "
            "the wall-time efficiency measures contention as much as the code. The iterative preset also changes "
            "its preconditioner with the rank count (ASM: one subdomain per rank).")
    else:
        add("No 2-rank result.")
    add("")

    add("## Profile: what dominates")
    add("")
    for r in ok:
        if r["ranks"] == 1 and r["dofs"] == max(x["dofs"] for x in ok if x["preset"] == r["preset"] and x["ranks"] == 1):
            add("- " + dominant_summary(r))
    for r in ok:
        if r["ranks"] == 2:
            add("- " + dominant_summary(r))
    add("")
    diag = diagnosis(results)
    if diag:
        add(diag)
        add("")
    for r in ok:
        if r.get("profile") or r.get("cprofile_top") is not None:
            L.extend(_events_table(r))
            add("")
            if r.get("cprofile_top"):
                lines = [ln for ln in r["cprofile_top"].splitlines() if ln.strip()]
                start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls")), 0)
                add("Python profile (cProfile, rank 0, top by own time) of the same steps:")
                add("")
                add("```")
                L.extend(lines[start:start + 9])
                add("```")
                add("")
            if r.get("log_view"):
                add(f"Full `-log_view`: `{Path(r['log_view']).relative_to(REPO)}` (scratch, not committed).")
                add("")
    add("py-spy is not in the runtime (docker/packages.txt), so the profile is PETSc's event log of the time-step "
        "stage plus cProfile; the Python side is a thin layer over the PETSc/DOLFINx C calls.")
    add("")

    # Targets.
    add("## Targets")
    add("")
    add("| target | measured | status |")
    add("|---|---|---|")
    ratios = [(r["id"], r.get("newton_over_poisson"), r.get("newton_over_poisson_cpu")) for r in ok
              if r.get("newton_over_poisson")]
    if ratios:
        worst = max(ratios, key=lambda x: x[1])
        best = min(ratios, key=lambda x: x[1])
        met = worst[1] <= 10
        add(f"| one coupled Newton iteration <= 10x the Poisson baseline on the same mesh | "
            f"{best[1]:.0f}x (`{best[0]}`) to {worst[1]:.0f}x (`{worst[0]}`) wall; CPU "
            f"{min(x[2] for x in ratios if x[2]):.0f}x to {max(x[2] for x in ratios if x[2]):.0f}x | "
            f"{'met' if met else '**not met**'} |")
    par = [(k, p) for k, p in a["parallel"].items()]
    nnz_note = next((r for r in sorted(ok, key=lambda r: -r["dofs"]) if r.get("jacobian_nnz")
                     and (r.get("poisson") or {}).get("nnz")), None)
    for preset, p in par:
        big = p["dofs"] >= 200_000
        met = p["efficiency"] >= 0.8
        status = ("met" if met else "**not met**") if big else f"not tested (only {p['dofs']} DOFs < 200k)"
        add(f"| parallel efficiency >= 80 % from 1 to 2 ranks at >= 200k DOFs ({preset}) | "
            f"{100 * p['efficiency']:.0f} % wall at {p['dofs']} DOFs (CPU-time based: {100 * p['efficiency_cpu']:.0f} %) | "
            f"{status}{'; CPU-time based ' + ('>=' if p['efficiency_cpu'] >= 0.8 else '<') + ' 80 %' if big and not met else ''} |")
    if not par:
        add("| parallel efficiency >= 80 % 1 -> 2 ranks at >= 200k DOFs | not measured | **not measured** |")
    g = a["growth"].get("iterative")
    if g:
        worst = max(pw["excess"] for pw in g["pairwise"])
        worst_cpu = max(pw["excess_cpu"] for pw in g["pairwise"])
        met = worst <= 1.2
        add(f"| iterative preset: time per step grows at most 1.2x faster than the DOFs | worst step-time "
            f"ratio / DOF ratio {worst:.2f} (CPU {worst_cpu:.2f}); slope {g['slope_step_wall']:.2f} "
            f"(per doubling 2^{g['slope_step_wall']:.2f}/2 = {2 ** g['slope_step_wall'] / 2:.2f}) | "
            f"{'met' if met else '**not met**'}{variant_growth_note(results)} |")
    est = args_used.get("estimate")
    if est:
        met = est["minutes"] <= 15 and not est.get("stalled")
        stalled = est.get("stalled")
        pr = est.get("probe") or {}
        add(f"| 2D paper case (>= 200k DOFs) to t = 0.05 s in <= 15 min on 2 ranks (**estimate**) | "
            + (f"the adaptive probe **stalled** at t = {pr.get('t_end', 0):.3g} s (dt cut to "
               f"{pr.get('dt_end', 0):.2g} s), so t = 0.05 s is not reached at present; had it not stalled: " if stalled else "")
            + (f"(the adaptive probe covered only t <= {pr['t_end']:.2g} s) " if pr and not stalled else "")
            + f"~{est['minutes']:.0f} min ({est['steps']} attempts at {est['dofs']} DOFs; range "
            f"{est['minutes_low']:.0f}-{est['minutes_high']:.0f} min, see below) | "
            f"{('met (estimate)' if met else '**not met** (estimate)') if est['dofs'] >= 200_000 else 'not tested (no 2-rank case >= 200k DOFs)'} |")
    add("")
    if nnz_note:
        p = nnz_note["poisson"]
        add(f"For scale (`{nnz_note['id']}`): the coupled Jacobian has {nnz_note['dofs'] / p['dofs']:.1f}x the "
            f"Poisson DOFs and {nnz_note['jacobian_nnz'] / p['nnz']:.0f}x its nonzeros "
            f"({nnz_note['jacobian_nnz']:.3g} vs {p['nnz']:.3g}), and a Newton iteration also assembles a Jacobian "
            "with the plastic return map at every quadrature point and factorises or preconditions a "
            "non-symmetric 5-field system.")
        add("")
    if est:
        add("### Paper-case estimate (not a measurement)")
        add("")
        add(f"Time per step from `{est['case']}` ({est['dofs']} DOFs, 2 ranks): {est['step_s']:.1f} s wall at "
            f"{est['newton']:.1f} Newton iterations per step ({est['newton_s']:.2f} s per Newton iteration). "
            f"Step count: the adaptive controller with the paper defaults (`config.TimeStepping`: dt_initial "
            f"{est['dt_initial']:g} s, x{est['growth']:g} after <= {est['easy']} Newton iterations, dt_max "
            f"{est['dt_max']:g} s, {est['n_outputs']} output times, t_end {est['t_end']:g} s) needs "
            f"{est['ideal_steps']} steps if every step is accepted at that Newton count (simulated with "
            "`StepController`).")
        add("")
        pr = est.get("probe")
        if pr:
            acc = [x for x in pr["attempts"] if x["converged"]]
            add(f"Adaptive probe (measured on `{est['probe_case']}`, {pr['wall_s']:.0f} s): continuing from "
                f"t = {pr['t_start']:.3g} s, dt = {pr['dt_start']:g} s with that controller, {pr['accepted']} "
                f"steps were accepted and {pr['rejected']} rejected ({pr['newton_per_accepted']:.1f} Newton "
                f"iterations per accepted step, {pr['newton_per_attempt']:.1f} per attempt); t reached "
                f"{pr['t_end']:.3g} s with dt = {pr['dt_end']:.3g} s"
                + (f" (largest accepted dt {max(x['dt'] for x in acc):.3g} s)." if acc else "."))
            if est.get("stalled"):
                add("")
                fails = [x for x in pr["attempts"] if not x["converged"]]
                add(f"**The probe stalled**: after {len(fails)} rejected attempts (SNES reasons: "
                    + ", ".join(sorted({x['reason'] for x in fails})) + f") dt fell to {pr['dt_end']:.2g} s near "
                    f"t = {pr['t_end']:.3g} s. That is a convergence failure of the solver, not a cost issue: until "
                    "it is fixed no mesh size reaches t = 0.05 s, whatever the time per step. The numbers below "
                    "assume it is fixed and dt grows again from the stall onset.")
            add("")
            where = (f"the stall onset (t = {est['stall_onset_t']:.3g} s, resuming with the last accepted dt)"
                     if est.get("stall_onset_t") is not None else "the probe's end (t, dt)")
            add(f"Estimate: {est['n_pre']} ideal steps to the probe's start + {est.get('probe_attempts_counted', 0)} probe "
                f"attempts (at their measured Newton counts) + {est['n_post']} ideal steps from {where} to t_end "
                f"= **{est['steps']} attempts, ~{est['minutes']:.0f} min** on 2 ranks. Range "
                f"{est['minutes_low']:.0f} min (CPU instead of wall time, as on an idle machine) to "
                f"{est['minutes_high']:.0f} min (every remaining step at the easy limit of {est['easy']} Newton "
                "iterations). If dt stops growing later (more rejections), the count grows accordingly."
                + ("" if not est.get("variants") else " With the candidate fixes (not applied) at the same size on "
                   "2 ranks: " + "; ".join(f"`{v['id']}` {v['step_s']:.1f} s/step -> ~{v['minutes']:.0f} min"
                                          for v in est["variants"]) + "."))
        else:
            add(f"Estimate: {est['steps']} steps x {est['step_s']:.1f} s = **~{est['minutes']:.0f} min** "
                f"(range {est['minutes_low']:.0f}-{est['minutes_high']:.0f} min: CPU time; every step at "
                f"{est['easy']} Newton iterations).")
        add("")
        add("The paper case has other parameters than the benchmark case (10 nm interface, independent D, "
            "2 x 1 um, 6 grains), so its Newton counts and step counts may differ; this is an estimate.")
        add("")

    add("## fenicsx-performance-tests")
    add("")
    add(fpt["text"])
    add("")
    add("## Reproduce")
    add("")
    add("`make bench` (full run; writes this file and the CSV), `bin/nzsp-env python3 -m nzsp_fem.bench --quick` "
        "(smallest sizes, writes to `scratch/bench/quick/`), one case: `bin/nzsp-env mpirun -n 2 python3 -m "
        "nzsp_fem.bench --case '{\"preset\": \"direct\", \"h_factor\": 1.0, \"steps\": 5, \"dt\": 1e-5}' "
        "--out scratch/bench/one.json`. Options: `--steps`, `--dt`, `--factors`, `--iterative-factors`, "
        "`--no-variants`, `--timeout`, `--output-dir`.")
    add("")
    path.write_text("\n".join(L))


def fenicsx_performance_tests() -> dict:
    exe = shutil.which("dolfinx-scaling-test")
    policy = ""
    if shutil.which("apt-cache"):
        try:
            policy = subprocess.run(["apt-cache", "policy", "fenicsx-performance-tests"], capture_output=True,
                                    text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            policy = ""
    installed = next((ln.split(":", 1)[1].strip() for ln in policy.splitlines() if "Installed:" in ln), None)
    candidate = next((ln.split(":", 1)[1].strip() for ln in policy.splitlines() if "Candidate:" in ln), None)
    if exe:
        text = (f"`dolfinx-scaling-test` is installed ({exe}); it was not run by this benchmark: the Poisson "
                "baseline above is the same solve in Python on the benchmark's own mesh.")
    elif candidate and candidate != "(none)":
        text = (f"Debian's `fenicsx-performance-tests` ({candidate}, the C++ `dolfinx-scaling-test` Poisson/elasticity "
                f"weak/strong scaling driver) is available from the runtime's apt sources but not installed "
                f"(installed: {installed or '(none)'}). It would fit: it only depends on libraries the runtime "
                "already has (libdolfinx-real0.9, libpetsc-real3.22, basix, boost-program-options). It is not in "
                "docker/packages.txt, so the benchmark does not use it; the Poisson baseline above is the same "
                "kind of solve (P1 Poisson, CG + BoomerAMG) on the benchmark's own mesh.")
    else:
        text = ("`fenicsx-performance-tests` is not installed and apt-cache does not list it here; the Poisson "
                "baseline above stands in for it.")
    return {"installed": bool(exe), "candidate": candidate, "text": text}


def paper_estimate(results: list[dict]) -> dict | None:
    """Minutes to t = 0.05 s for the paper case on 2 ranks: an estimate from the measured
    time per step / per Newton iteration (largest 2-rank case) and the step count of the
    adaptive controller (simulated; corrected by the adaptive probe where one was run)."""
    from .config import Config
    ok = [r for r in _ok(results) if r["ranks"] == 2 and r["converged"]]
    if not ok:
        return None
    big = [r for r in ok if r["dofs"] >= 200_000]
    pool = big or ok
    # The faster preset at the largest size.
    r = min((x for x in pool if x["dofs"] == max(y["dofs"] for y in pool)), key=lambda x: x["step_wall_s"])
    tc = Config().time
    easy = tc.easy_iterations
    newton = r["newton_per_step"]
    n_ideal = controller_steps(newton, tc)
    est = {"case": r["id"], "dofs": r["dofs"], "step_s": r["step_wall_s"], "newton": newton,
           "newton_s": r["newton_wall_s"], "ideal_steps": n_ideal, "dt_initial": tc.dt_initial,
           "growth": tc.growth_factor, "easy": easy, "dt_max": tc.dt_max, "n_outputs": tc.n_outputs,
           "t_end": tc.t_end, "probe": None}
    probe_case = next((x for x in _ok(results) if x.get("adaptive_probe")), None)
    probe = probe_case["adaptive_probe"] if probe_case else None
    if probe:
        est["probe_case"] = f"{probe_case['id']}, {probe_case['dofs']} DOFs"
        acc = [a["dt"] for a in probe["attempts"] if a["converged"]]
        # Stalled: dt ended far below the largest accepted dt, after rejections.
        est["stalled"] = bool(acc) and probe["rejected"] > 0 and probe["dt_end"] < 1e-2 * max(acc)
    if probe and probe["accepted"] > 0:
        attempts, t_resume, dt_resume = probe["attempts"], probe["t_end"], probe["dt_end"]
        if est.get("stalled"):
            # Count the probe only up to the stall onset (dt below 1 % of the largest accepted
            # dt so far) and resume from there with the last accepted dt: "had it not stalled".
            best, last_ok = 0.0, None
            for k, att in enumerate(attempts):
                if best > 0 and att["dt"] < 1e-2 * best:
                    attempts, t_resume, dt_resume = attempts[:k], att["t"], last_ok
                    break
                if att["converged"]:
                    best, last_ok = max(best, att["dt"]), att["dt"]
            est["stall_onset_t"] = t_resume
        est["probe_attempts_counted"] = len(attempts)
        n_pre = controller_steps(newton, tc, until=probe["t_start"])
        n_post = controller_steps(newton, tc, t=t_resume, dt=dt_resume)
        probe_newton = sum(a["newton"] for a in attempts)
        n_attempts = n_pre + len(attempts) + n_post
        minutes = ((n_pre + n_post) * r["step_wall_s"] + probe_newton * r["newton_wall_s"]) / 60
        low = ((n_pre + n_post) * r["step_cpu_s"] + probe_newton * r["newton_cpu_s"]) / 60
        high = ((n_pre + n_post) * max(easy, newton) * r["newton_wall_s"] + probe_newton * r["newton_wall_s"]) / 60
        est.update(probe=probe, steps=n_attempts, n_pre=n_pre, n_post=n_post, minutes=minutes,
                   minutes_low=low, minutes_high=high)
        est["variants"] = [
            {"id": v["id"], "step_s": v["step_wall_s"],
             "minutes": ((n_pre + n_post) * v["step_wall_s"] + probe_newton * v["newton_wall_s"]) / 60}
            for v in _ok(results, variants=True)
            if v.get("variant") and v["ranks"] == 2 and v["dofs"] == r["dofs"] and v["converged"]]
    else:
        est.update(steps=n_ideal, minutes=n_ideal * r["step_wall_s"] / 60,
                   minutes_low=n_ideal * r["step_cpu_s"] / 60,
                   minutes_high=n_ideal * max(easy, newton) * r["newton_wall_s"] / 60)
    return est


def write_reports(outdir: Path, results: list[dict], info: dict, quick: bool, steps: int, dt: float) -> tuple:
    csv_path, md_path = outdir / "performance.csv", outdir / "performance.md"
    write_csv(csv_path, results)
    est = paper_estimate(results)
    write_markdown(md_path, results, info, {"quick": quick, "steps": steps, "dt": dt,
                                            "csv_name": csv_path.name, "estimate": est},
                   fenicsx_performance_tests())
    return md_path, csv_path


def drive(args) -> int:
    t0 = time.perf_counter()
    outdir = Path(args.output_dir) if args.output_dir else (SCRATCH / "quick" if args.quick else REPO / "docs")
    outdir.mkdir(parents=True, exist_ok=True)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        md_path, csv_path = write_reports(outdir, saved["results"], saved["info"], saved.get("quick", args.quick),
                                          saved.get("steps", args.steps), saved.get("dt", args.dt))
        print(f"rewrote {md_path} and {csv_path} from {args.from_json}")
        return 0
    info = machine_info()

    def log(msg):
        print(f"[bench {time.perf_counter() - t0:6.0f} s] {msg}", flush=True)

    factors = [float(x) for x in args.factors.split(",")] if args.factors else None
    it_factors = [float(x) for x in args.iterative_factors.split(",")] if args.iterative_factors else None
    cases = plan(args.quick, args.steps, args.dt, factors, it_factors,
                 variants=False if args.no_variants else None)
    log(f"{len(cases)} cases, {args.steps} steps of {args.dt:g} s each; machine {info['cpu']}, "
        f"load {info['loadavg'][0]:.1f}")
    results = []
    for case in cases:
        results.append(run_subprocess(case, args.timeout, log))
    info["loadavg_end"] = list(os.getloadavg())
    info["total_s"] = time.perf_counter() - t0
    (SCRATCH / ("all_quick.json" if args.quick else "all.json")).write_text(
        json.dumps({"info": info, "results": results, "quick": args.quick, "steps": args.steps, "dt": args.dt},
                   indent=1))
    md_path, csv_path = write_reports(outdir, results, info, args.quick, args.steps, args.dt)
    log(f"wrote {md_path} and {csv_path} in {info['total_s'] / 60:.1f} min")
    return 0 if all("failed" not in r for r in results) else 1


def worker(args) -> int:
    from mpi4py import MPI
    case = json.loads(args.case)
    if case.get("log_view"):
        Path(case["log_view"]).parent.mkdir(parents=True, exist_ok=True)
    result = run_case(case, MPI.COMM_WORLD, log=lambda m: print(m, flush=True))
    if MPI.COMM_WORLD.rank == 0:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m nzsp_fem.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smallest sizes only (smoke check)")
    p.add_argument("--case", help="worker mode: run one case (JSON) in this MPI job")
    p.add_argument("--out", help="worker mode: where to write the result JSON")
    p.add_argument("--steps", type=int, default=STEPS, help=f"time steps per case (default {STEPS})")
    p.add_argument("--dt", type=float, default=DT, help=f"fixed time step in s (default {DT:g})")
    p.add_argument("--factors", help="comma-separated mesh refinement factors (direct preset and default for both)")
    p.add_argument("--iterative-factors", help="comma-separated refinement factors for the iterative preset")
    p.add_argument("--from-json", help="only rewrite the reports from a saved scratch/bench/all*.json")
    p.add_argument("--no-variants", action="store_true", help="skip the candidate-fix variants (full run)")
    p.add_argument("--timeout", type=float, default=1800, help="per-case time limit in s (default 1800)")
    p.add_argument("--output-dir", help="where performance.md/.csv go (default docs/, --quick: scratch/bench/quick)")
    args = p.parse_args(argv)
    if args.case:
        if not args.out:
            p.error("--case needs --out")
        return worker(args)
    return drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
