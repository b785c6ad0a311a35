"""Measurement: one benchmark case in this process (``run_case``), the Poisson baseline, the
adaptive-controller probe, and the worker / subprocess plumbing that runs each case as its
own ``mpirun -n R python3 -m benchmarks.bench --case JSON --out FILE`` (fresh process: clean
peak memory and PETSc log).

What a case measures (all times are maxima over ranks; "wall" is elapsed time, "cpu" the
process CPU time, which is less sensitive to other jobs on a shared machine):

* per step: wall and CPU time, Newton iterations, linear iterations. A step is the run's
  own fixed-length step, ``Simulation.step(dt)`` (predictor, solve, commit and the step's
  diagnostics: "other" includes those), and the adaptive probe continues with the
  production step rule (``Simulation.step()``);
* the split of the step: assembly (the SNES residual and Jacobian callbacks, timed by
  re-registering whatever callbacks the SNES holds through timers, from outside), linear
  solve (the rest of SNESSolve: PETSc KSPSolve + PCSetUp), and the return mapping: the extra
  cost of assembling the plastic residual/Jacobian over the elastic one (same mesh, same
  state, a second CoupledProblem with plasticity off; SNESProblem.assemble_residual /
  assemble_jacobian), times the number of assemblies, plus the committed state update
  (PlasticState.commit). The return mapping is part of "assembly" except the commit;
* PETSc log events of the time-step stage (a profile; ``-log_view`` text for profiled cases);
* peak memory (getrusage maxrss) per rank after the steps, and per DOF;
* a baseline in the same process: scalar P1 Poisson (CG + BoomerAMG, rtol 1e-8) on the
  same mesh, assembly + setup + solve.

DOLFINx, PETSc and MPI are imported inside the functions: the driver process that launches
the workers (and rewrites reports) must not initialise MPI itself.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

from nzsp_fem.config import Config, parse_config

from .cases import DT, REPO, SCRATCH, STEPS, case_config, shown_path

# PETSc events reported in the profile (top-level ones are not nested in each other except
# where PETSc nests them: PCSetUp/PCApply/MatLUFactorNum inside SNESSolve, etc.).
EVENTS = [
    "SNESSolve",
    "SNESFunctionEval",
    "SNESJacobianEval",
    "SNESLineSearch",
    "KSPSolve",
    "KSPSetUp",
    "PCSetUp",
    "PCSetUpOnBlocks",
    "PCApply",
    "MatLUFactorSym",
    "MatLUFactorNum",
    "MatSolve",
    "MatMult",
    "MatCreateSubMats",
    "MatCreateSubMat",
    "MatGetOrdering",
    "KSPGMRESOrthog",
    "MatAssemblyBegin",
    "MatAssemblyEnd",
    "MatZeroEntries",
    "VecMDot",
    "VecMAXPY",
    "VecScatterBegin",
]

# Result keys every case returns (the smoke test checks them).
RESULT_KEYS = [
    "id",
    "preset",
    "ranks",
    "h_factor",
    "steps",
    "dt",
    "dofs",
    "cells",
    "converged",
    "newton_per_step",
    "linear_per_newton",
    "step_wall_s",
    "step_cpu_s",
    "newton_wall_s",
    "assembly_s",
    "linear_s",
    "return_map_s",
    "commit_s",
    "other_s",
    "maxrss_mb",
    "maxrss_base_mb",
    "bytes_per_dof",
    "poisson",
    "petsc_events",
    "timings",
]


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

    from mpi4py import MPI
    from petsc4py import PETSc

    import ufl
    from dolfinx import fem
    from dolfinx.fem import petsc as fem_petsc

    from nzsp_fem.mesh import LEFT, RIGHT

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
        "wall_s": wall,
        "cpu_s": cpu,
        "assemble_s": comm.allreduce(min(parts["assemble"][1:]), op=MPI.MAX),
        "solve_s": comm.allreduce(min(parts["solve"][1:]), op=MPI.MAX),
        "iterations": its[-1],
        "converged": reason > 0,
    }
    ksp.destroy()
    A.destroy()
    b.destroy()
    return out


class _Attempts:
    """Every attempt of the simulation's loop: accepted, failed or rejected by the error
    estimate."""

    def __init__(self):
        self.rows = []

    def _row(self, t, dt, report, accepted):
        self.rows.append(
            {
                "t": t,
                "dt": dt,
                "newton": report.newton_iterations,
                "converged": accepted,
                "reason": report.reason_name,
                "error_estimate": report.error_estimate,
            }
        )

    def on_step_rejected(self, sim, t, dt, report):
        self._row(t, dt, report, False)

    def on_step_accepted(self, sim, info):
        self._row(info.t - info.dt, info.dt, info.report, True)


def adaptive_probe(sim, dt, max_attempts=60, max_wall_s=150.0) -> dict:
    """Continue ``sim`` (the case's nzsp_fem.Simulation) from its state with the production
    step rule (Simulation.step: error estimate, interface-motion cap, PI control, cut and
    retry) under the defaults of config.TimeStepping (t_end, dt_max, tolerances), from
    ``dt``; record every attempt. Stops after ``max_attempts`` attempts or ``max_wall_s``."""
    from mpi4py import MPI

    from nzsp_fem.solver import StepController

    comm = sim.comm
    sim.controller = StepController.from_config(Config().time, dt=dt, breakpoints=sim.protocol.breakpoints)
    log = sim.add_observer(_Attempts())
    attempts, t0, w_start = log.rows, sim.t, time.perf_counter()
    while not sim.finished and len(attempts) < max_attempts:
        if comm.allreduce(time.perf_counter() - w_start, op=MPI.MAX) > max_wall_s:
            break
        if sim.step() is None:
            break
    sim.remove_observer(log)
    acc = [a for a in attempts if a["converged"]]
    return {
        "t_start": t0,
        "t_end": sim.t,
        "dt_start": dt,
        "dt_end": sim.controller.dt,
        "accepted": len(acc),
        "rejected": len(attempts) - len(acc),
        "attempts": attempts,
        "newton_per_attempt": sum(a["newton"] for a in attempts) / max(len(attempts), 1),
        "newton_per_accepted": sum(a["newton"] for a in acc) / max(len(acc), 1),
        "wall_s": comm.allreduce(time.perf_counter() - w_start, op=MPI.MAX),
    }


def _elastic_twin(cfg, poly):
    """The same problem with plasticity off, and its solver (only used for assembly)."""
    from nzsp_fem.problem import CoupledProblem
    from nzsp_fem.solver import CoupledSolver

    data = cfg.model_dump()
    data["mechanics"]["plasticity"] = False
    twin = CoupledProblem(parse_config(data), poly)
    return twin, CoupledSolver(twin)


def _assembly_times(snes_problem, state, repeats, comm) -> tuple[float, float]:
    """Best wall time of one residual and one Jacobian assembly at ``state`` (a Function on the
    solver's space: the problem's current state), through SNESProblem's public assembly."""
    x = state.x.petsc_vec.duplicate()
    state.x.petsc_vec.copy(x)
    # assemble_residual copies x into the state first, so the Jacobian sees x as well.
    t_res, _ = _min_time(lambda: snes_problem.assemble_residual(x), repeats, comm)
    t_jac, _ = _min_time(lambda: snes_problem.assemble_jacobian(x), repeats, comm)
    x.destroy()
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

    from nzsp_fem.mesh import build_polycrystal, spec_from_config
    from nzsp_fem.run import Simulation, StepFailed

    def say(msg):
        if log is not None and comm.rank == 0:
            log(msg)

    steps, dt = int(case.get("steps", STEPS)), float(case.get("dt", DT))
    timings = {}
    variant = case.get("variant")
    cfg = case_config(case)

    comm.barrier()
    w0 = time.perf_counter()
    poly = build_polycrystal(spec_from_config(cfg), comm, cache_dir=cfg.mesh.cache_dir)
    timings["mesh_s"] = comm.allreduce(time.perf_counter() - w0, op=MPI.MAX)
    w0 = time.perf_counter()
    # The solver applies the preset, including the iterative preset's field split
    # (nzsp_fem.solver.presets.field_splits); variants only add PETSc options (cases.py).
    sim = Simulation(cfg, comm, polycrystal=poly)
    pb, solver = sim.problem, sim.solver
    timings["setup_s"] = comm.allreduce(time.perf_counter() - w0, op=MPI.MAX)
    w0 = time.perf_counter()
    sim.start()
    timings["initialize_s"] = comm.allreduce(time.perf_counter() - w0, op=MPI.MAX)
    dofs = pb.dofs
    cells = poly.mesh.topology.index_map(poly.mesh.topology.dim).size_global
    say(
        f"{case.get('id', '')}: {dofs} dofs, {cells} cells; setup {timings['setup_s']:.1f} s, "
        f"initialize {timings['initialize_s']:.1f} s"
    )

    # Instrument from outside: re-register whatever residual / Jacobian callbacks the SNES
    # holds (petsc4py getFunction / getJacobian) through timers, with their own vectors and
    # matrices; SNES may call them on other vectors than the solver's (line search).
    clock = _Clock()
    s = solver.snes
    f_vec, (f_fn, f_args, f_kw) = s.snes.getFunction()
    s.snes.setFunction(clock.wrap("residual", f_fn), f_vec, args=f_args, kargs=f_kw)
    j_mat, p_mat, (j_fn, j_args, j_kw) = s.snes.getJacobian()
    s.snes.setJacobian(clock.wrap("jacobian", j_fn), j_mat, p_mat, args=j_args, kargs=j_kw)
    s.solve = clock.wrap("snes", s.solve)
    if pb.plastic is not None:
        pb.plastic.commit = clock.wrap("plastic_commit", pb.plastic.commit)
    pb.commit = clock.wrap("commit", pb.commit)  # what the solver's accept calls

    stage = _new_stage("bench_steps")
    profiler = cProfile.Profile() if case.get("profile") and comm.rank == 0 else None
    per_step = []
    converged = True
    comm.barrier()
    stage.push()
    if profiler:
        profiler.enable()
    for k in range(steps):
        comm.barrier()
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            report = sim.step(dt).report  # the run's own step: predictor, commit, diagnostics
        except StepFailed as failed:
            report = failed.report
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        per_step.append(
            {
                "wall_s": comm.allreduce(wall, op=MPI.MAX),
                "cpu_s": comm.allreduce(cpu, op=MPI.MAX),
                "newton": report.newton_iterations,
                "linear": report.linear_iterations,
                "converged": bool(report.converged),
                "reason": report.reason_name,
            }
        )
        say(
            f"  step {k + 1}/{steps}: {per_step[-1]['wall_s']:.2f} s, newton {report.newton_iterations}, "
            f"linear {report.linear_iterations}, {report.reason_name}"
        )
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
        "id": case.get("id", f"{case['preset']}-h{case['h_factor']}-np{comm.size}"),
        "variant": variant,
        "config": case.get("config"),
        "preset": case["preset"],
        "ranks": comm.size,
        "h_factor": float(case["h_factor"]),
        "steps": steps,
        "steps_done": n,
        "dt": dt,
        "dofs": dofs,
        "cells": cells,
        "dofs_per_rank": dofs / comm.size,
        "converged": converged,
        "per_step": per_step,
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
        "versions": {
            "dolfinx": dolfinx.__version__,
            "petsc": ".".join(map(str, PETSc.Sys.getVersion())),
            "python": platform.python_version(),
        },
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
        twin, twin_solver = _elastic_twin(cfg, poly)
        twin.w.x.array[:] = pb.w.x.array
        twin.w_old.x.array[:] = pb.w_old.x.array
        repeats = int(case.get("assembly_repeats", 3))
        pl_res, pl_jac = _assembly_times(s, pb.w, repeats, comm)
        el_res, el_jac = _assembly_times(twin_solver.snes, twin.w, repeats, comm)
        twin_solver.destroy()
        del twin, twin_solver
        per_step_rm = (max(0.0, pl_res - el_res) * n_res + max(0.0, pl_jac - el_jac) * n_jac) / max(n, 1)
        result["return_map_s"] = per_step_rm + result["plastic_commit_s"]
        result["assembly_probe"] = {
            "plastic_residual_s": pl_res,
            "plastic_jacobian_s": pl_jac,
            "elastic_residual_s": el_res,
            "elastic_jacobian_s": el_jac,
            "wall_s": gmax(time.perf_counter() - w0),
        }
        say(f"  assembly plastic {pl_res:.3f}/{pl_jac:.3f} s, elastic {el_res:.3f}/{el_jac:.3f} s (F/J)")

    result["poisson"] = None
    if case.get("poisson", True):
        result["poisson"] = poisson_baseline(poly.mesh, poly.facet_tags, int(case.get("poisson_repeats", 3)))
        p = result["poisson"]
        result["newton_over_poisson"] = result["newton_wall_s"] / p["wall_s"]
        result["newton_over_poisson_cpu"] = result["newton_cpu_s"] / p["cpu_s"] if p["cpu_s"] > 0 else None
        say(
            f"  Poisson {p['dofs']} dofs: {p['wall_s']:.3f} s ({p['iterations']} CG its); "
            f"Newton iteration = {result['newton_over_poisson']:.1f} x Poisson"
        )

    result["adaptive_probe"] = None
    if case.get("adaptive_probe") and converged:
        result["adaptive_probe"] = adaptive_probe(sim, dt, **case["adaptive_probe"])
        ap = result["adaptive_probe"]
        say(
            f"  adaptive probe: {ap['accepted']} accepted / {ap['rejected']} rejected, t {ap['t_start']:.3g} -> "
            f"{ap['t_end']:.3g} s, dt -> {ap['dt_end']:.3g} s"
        )
    sim.close()
    return result


def run_subprocess(case: dict, timeout: float, log, scratch: Path | None = None) -> dict:
    """Run ``case`` as its own ``mpirun -n ranks`` worker; its result JSON and its log go to
    ``scratch/cases/`` and ``scratch/logs/`` (default SCRATCH, outside the source tree)."""
    scratch = Path(scratch) if scratch is not None else SCRATCH
    out = scratch / "cases" / f"{case['id']}.json"
    logfile = scratch / "logs" / f"{case['id']}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    cmd = [
        "mpirun",
        "-n",
        str(case["ranks"]),
        sys.executable,
        "-m",
        "benchmarks.bench",
        "--case",
        json.dumps(case),
        "--out",
        str(out),
    ]
    log(f"[{case['id']}] " + " ".join(cmd[:4]) + " ... (log: " + shown_path(logfile) + ")")
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
    return {
        "id": case["id"],
        "preset": case["preset"],
        "ranks": case["ranks"],
        "h_factor": case["h_factor"],
        "failed": str(rc),
        "process_wall_s": wall,
    }


def worker(case_json: str, out: str | Path) -> int:
    """Worker mode (under mpirun): run one case (JSON text) and write its result to ``out``."""
    from mpi4py import MPI

    case = json.loads(case_json)
    if case.get("log_view"):
        Path(case["log_view"]).parent.mkdir(parents=True, exist_ok=True)
    result = run_case(case, MPI.COMM_WORLD, log=lambda m: print(m, flush=True))
    if MPI.COMM_WORLD.rank == 0:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)
    return 0
