"""One run: config -> mesh -> initial state -> adaptive time loop -> outputs."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import numpy as np
from dolfinx import fem
from mpi4py import MPI

from .config import Config
from .mesh import PolycrystalSpec, build_polycrystal
from .outputs import (TIMESERIES_COLUMNS, CsvTable, FieldWriter, RunLog, prepare_directory, write_json,
                      write_yaml)
from .problem import CONC, DISP, ETA, PHI, CoupledProblem
from .timestepping import StepController

EXIT_OK, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 3, 4


def polycrystal_spec(cfg: Config) -> PolycrystalSpec:
    ms, mh, nu = cfg.microstructure, cfg.mesh, cfg.nuclei
    nuclei = None if nu.positions == "grain_centres" else tuple(tuple(p) for p in nu.positions)
    seeds = None if ms.seeds is None else tuple(tuple(s) for s in ms.seeds)
    representation = ms.gb_representation if cfg.domain.dim == 2 else "smooth"
    return PolycrystalSpec(
        size=tuple(cfg.domain.size), n_grains=ms.grains, seeds=seeds, rng_seed=ms.rng_seed,
        gb_width=ms.gb_width, h_grain=mh.size_grain, h_gb=mh.size_gb, h_nucleus=mh.size_nucleus,
        nuclei=nuclei, nucleus_radius=nu.radius, length_scale=cfg.scales.length,
        representation=representation)


def output_directory(cfg: Config, output: str | None) -> Path:
    if output:
        return Path(output)
    if cfg.output.directory:
        return Path(cfg.output.directory)
    return Path("results") / cfg.name


def run_config(cfg: Config, output=None, overwrite=False, restart=False) -> int:
    if cfg.study is not None:
        from .study import run_study
        return run_study(cfg, output_directory(cfg, output), overwrite=overwrite, restart=restart)
    summary = run_single(cfg, output_directory(cfg, output), MPI.COMM_WORLD, overwrite=overwrite, restart=restart)
    return {"completed": EXIT_OK, "diverged": EXIT_DIVERGED}.get(summary["status"], EXIT_INTERRUPTED)


class _Interrupt:
    """SIGTERM/SIGINT set a flag; the loop stops at the next step boundary on all ranks."""

    def __init__(self):
        self.flag = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.flag = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class OutputFields:
    """The functions the VTX writers hold, in SI units, grouped by space (one writer each).

    VTX writers keep references to the functions they were opened with, so these are
    created once and refilled before every write.
    """

    def __init__(self, problem: CoupledProblem):
        self.problem = problem
        V_scalar = problem.subspaces[ETA][0]
        self.eta = fem.Function(V_scalar, name="eta")
        self.c = fem.Function(V_scalar, name="c")
        self.c_mol = fem.Function(V_scalar, name="c_mol_m3")
        self.phi = fem.Function(V_scalar, name="phi_V")
        self.cells = problem.cell_fields()
        nodal = [self.eta, self.c, self.c_mol, self.phi]
        scalar_cells = [f for k, f in self.cells.items() if k != "current_density"]
        beta = problem.beta
        if beta.function_space.ufl_element().degree == 0:
            scalar_cells.insert(0, beta)
        else:
            nodal.append(beta)
        self.groups = {"nodal": nodal, "cells": scalar_cells, "current_vector": [self.cells["current_density"]]}
        if problem.mechanics:
            self.u = fem.Function(problem.subspaces[DISP][0], name="u_m")
            self.groups["displacement"] = [self.u]

    def update(self) -> dict[str, list]:
        pb = self.problem
        sc, cfg = pb.scaling, pb.cfg
        self.eta.x.array[:] = pb.sub_function(ETA).x.array
        conc = pb.sub_function(CONC).x.array
        self.c.x.array[:] = np.exp(conc) if pb.log_c else conc
        self.c_mol.x.array[:] = self.c.x.array * cfg.electrochemistry.c0
        self.phi.x.array[:] = pb.sub_function(PHI).x.array * sc.potential
        for name, f in pb.cell_fields().items():
            self.cells[name].x.array[:] = f.x.array
        if pb.mechanics:
            self.u.x.array[:] = pb.sub_function(DISP).x.array * sc.length
        return self.groups


def run_single(cfg: Config, outdir: Path, comm, overwrite=False, restart=False) -> dict:
    prepare_directory(outdir, comm, overwrite, restart)
    log = RunLog(outdir / "run.log", comm, cfg.output.verbosity)
    write_yaml(outdir / "config.resolved.yaml", cfg.model_dump(mode="json"), comm)
    wall0 = time.perf_counter()

    log(f"nzsp-fem: {cfg.name} on {comm.size} rank(s) -> {outdir}")
    poly = build_polycrystal(polycrystal_spec(cfg), comm, cache_dir=cfg.mesh.cache_dir)
    problem = CoupledProblem(cfg, poly)
    groups = problem.scaling.groups()
    log("dimensionless groups: " + ", ".join(f"{k.split('  ')[0]}={v:.4g}" for k, v in groups.items()), 2)
    log(f"mesh: {poly.mesh.topology.index_map(poly.mesh.topology.dim).size_global} cells, "
        f"{problem.dofs} dofs; interface width {cfg.interface_width() * 1e9:.3g} nm")

    problem.initialize()
    steps = newton_total = 0
    t = 0.0
    controller = StepController.from_config(cfg.time)
    fields_dir = outdir / "fields"
    fields_dir.mkdir(exist_ok=True) if comm.rank == 0 else None
    comm.barrier()
    writer = FieldWriter(fields_dir, comm)
    table = CsvTable(outdir / "timeseries.csv", TIMESERIES_COLUMNS, comm, append=restart)
    status, reason = "completed", None
    short_circuit_time = None

    output_fields = OutputFields(problem)

    def write_fields(time_s):
        writer.write(output_fields.update(), time_s)

    write_fields(0.0)
    diag = problem.diagnostics()
    with _Interrupt() as interrupt:
        while not controller.finished(t):
            if steps >= cfg.time.max_steps:
                status, reason = "interrupted", "max_steps reached"
                break
            dt, landed = controller.propose(t)
            report = problem.try_step(t, dt)
            if not report.converged:
                log(f"  step failed at t={t:.6e} s, dt={dt:.3e} s: {report.reason_name} "
                    f"after {report.newton_iterations} Newton iterations; cutting dt", 2)
                if not controller.failed(dt):
                    status, reason = "diverged", report.reason_name
                    log(f"stopping: dt would fall below dt_min={cfg.time.dt_min:.3e} s (last SNES reason "
                        f"{report.reason_name})", 0)
                    break
                continue
            problem.commit()
            t += dt
            steps += 1
            newton_total += report.newton_iterations
            controller.accepted(report.newton_iterations, dt, landed)
            diag = problem.diagnostics()
            row = dict(vars(diag), t=t, dt=dt, newton_iterations=report.newton_iterations,
                       linear_iterations=report.linear_iterations)
            table.row(row)
            elapsed = time.perf_counter() - wall0
            eta_s = elapsed / t * (cfg.time.t_end - t) if t > 0 else math.inf
            log(f"step {steps:5d} t={t:.4e}/{cfg.time.t_end:.3e} s dt={dt:.2e} newton={report.newton_iterations:2d} "
                f"linear={report.linear_iterations:3d} metal={diag.metal_fraction:.4f} "
                f"I={diag.electrode_current_A:.3e} ETA {_hms(eta_s)}")
            if controller.is_output_time(t):
                write_fields(t)
            if comm.allreduce(interrupt.flag, op=MPI.LOR):
                status, reason = "interrupted", "signal"
                break

    if status != "completed" and not controller.is_output_time(t):
        write_fields(t)  # keep what was computed
    writer.close()
    table.close()
    summary = {
        "status": status, "reason": reason, "t_final": t, "steps": steps, "newton_iterations": newton_total,
        "wall_time_s": time.perf_counter() - wall0, "mpi_size": comm.size, "dofs": problem.dofs,
        "metal_fraction": diag.metal_fraction, "penetration_depth_m": diag.penetration_depth_m,
        "electrode_current_A": diag.electrode_current_A,
        "max_current_density_A_m2": diag.max_current_density_A_m2,
        "max_von_mises_Pa": diag.max_von_mises_Pa, "max_plastic_strain": diag.max_plastic_strain,
        "phi_gb_min_V": diag.phi_gb_min_V, "phi_gb_max_V": diag.phi_gb_max_V,
        "short_circuit": short_circuit_time is not None, "short_circuit_time_s": short_circuit_time,
        "integral_eta": diag.integral_eta, "integral_c": diag.integral_c, "integral_phi": diag.integral_phi,
        "total_sodium_mol": diag.total_sodium_mol,
    }
    write_json(outdir / "summary.json", summary, comm)
    log(f"{status}: t={t:.4e} s in {steps} steps, {newton_total} Newton iterations, "
        f"{summary['wall_time_s']:.1f} s wall", 0)
    log.close()
    return summary


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
