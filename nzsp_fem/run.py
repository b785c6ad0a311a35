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
from .outputs import OutputError
from .problem import CONC, DISP, ETA, PHI, CoupledProblem, metal_connects_electrodes
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


def field_panels(grids=()):
    """The standard field rows, restricted to fields every given grid has (no mechanics ->
    no stress rows)."""
    from .figures import Panel
    panels = [Panel("eta", "η (-)", "viridis"), Panel("c_mol_m3", "c (mol/m³)", "cividis"),
            Panel("phi_V", "φ (V)", "coolwarm"), Panel("current_density_magnitude", "|i| (A/m²)", "inferno"),
            Panel("plastic_strain", "p (-)", "magma"), Panel("von_mises", "σ_vM (Pa)", "plasma")]
    for grid in grids:
        if grid is not None:
            names = set(grid.point_data.keys()) | set(grid.cell_data.keys())
            panels = [p for p in panels if p.field in names]
    return panels


def gather_state(problem: CoupledProblem, fields: "OutputFields"):
    """The current fields (SI) on one pyvista grid on rank 0 (None elsewhere). Collective."""
    from .figures import gather_grid
    fields.update()
    point = {"eta": fields.eta, "c": fields.c, "c_mol_m3": fields.c_mol, "phi_V": fields.phi}
    cells = {k: f for k, f in fields.cells.items()}
    if problem.beta.function_space.ufl_element().degree == 0:
        cells["beta"] = problem.beta
    else:
        point["beta"] = problem.beta
    tags = {"grain": problem.poly.cell_tags} if problem.poly.cell_tags is not None else None
    return gather_grid(problem.mesh, point, cells, tags, length_scale=problem.scaling.length)


class Probes:
    """|i| and phi at the configured points, one CSV row per accepted step (rank 0 writes)."""

    def __init__(self, cfg: Config, problem: CoupledProblem, fields: "OutputFields", path: Path, restart: bool,
                 t_keep: float | None):
        self.names = [p.name for p in cfg.output.probes]
        self.fields = fields
        self.evaluator = None
        self.table = None
        if self.names:
            from .probes import ProbeEvaluator
            points = np.array([p.position for p in cfg.output.probes]) / problem.scaling.length
            self.evaluator = ProbeEvaluator(problem.mesh, points)
            columns = ["t"] + [f"{n}_{q}" for n in self.names for q in ("current_density_magnitude", "phi_V")]
            self.table = CsvTable(path, columns, problem.comm, append=restart, keep_until=t_keep)

    def record(self, t: float) -> None:
        if self.evaluator is None:
            return
        self.fields.update()
        values = self.evaluator.evaluate_all(
            {"i": self.fields.cells["current_density"], "phi": self.fields.phi}, magnitude=("i",))
        if values is not None:
            row = {"t": t}
            for k, name in enumerate(self.names):
                row[f"{name}_current_density_magnitude"] = float(values["i"][k])
                row[f"{name}_phi_V"] = float(values["phi"][k])
            self.table.row(row)

    def close(self):
        if self.table:
            self.table.close()


def run_single(cfg: Config, outdir: Path, comm, overwrite=False, restart=False) -> dict:
    from . import checkpoint as ckpt

    prepare_directory(outdir, comm, overwrite, restart)
    log = RunLog(outdir / "run.log", comm, cfg.output.verbosity)
    write_yaml(outdir / "config.resolved.yaml", cfg.model_dump(mode="json"), comm)
    wall0 = time.perf_counter()
    log(f"nzsp-fem: {cfg.name} on {comm.size} rank(s) -> {outdir}")
    poly = build_polycrystal(polycrystal_spec(cfg), comm, cache_dir=cfg.mesh.cache_dir)
    problem = CoupledProblem(cfg, poly)
    log("dimensionless groups: " + ", ".join(f"{k.split('  ')[0]}={v:.4g}"
                                             for k, v in problem.scaling.groups().items()), 2)
    log(f"mesh: {poly.mesh.topology.index_map(poly.mesh.topology.dim).size_global} cells, "
        f"{problem.dofs} dofs; interface width {cfg.interface_width() * 1e9:.3g} nm")

    controller = StepController.from_config(cfg.time)
    state = {"t": 0.0, "steps": 0, "newton_total": 0, "short_circuit_time": None, "restarts": 0}
    checkpoints = outdir / "checkpoints"
    resumed = ckpt.latest_checkpoint(checkpoints, comm) if restart else None
    if restart and resumed is None:
        raise OutputError(f"--restart: no complete checkpoint in {checkpoints}")
    if resumed is not None:
        meta = ckpt.read_checkpoint(resumed, problem.mesh, checkpoint_functions(problem), comm)
        problem.after_restore()
        state.update(meta["run"])
        state["restarts"] += 1
        controller.dt = meta["run"]["controller_dt"]
        log(f"restarted from {resumed.name}: t={state['t']:.6e} s, step {state['steps']}")
    else:
        problem.initialize()

    figures_dir = outdir / "figures"
    fields_dir = outdir / "fields"
    if comm.rank == 0:
        fields_dir.mkdir(exist_ok=True)
        figures_dir.mkdir(exist_ok=True)
    comm.barrier()
    # A restarted run writes new VTX series next to the old ones instead of truncating them.
    suffix = f"-restart{state['restarts']}" if resumed is not None else ""
    writer = FieldWriter(fields_dir, comm, suffix=suffix)
    output_fields = OutputFields(problem)
    t_keep = state["t"] if resumed is not None else None
    table = CsvTable(outdir / "timeseries.csv", TIMESERIES_COLUMNS, comm, append=resumed is not None,
                     keep_until=t_keep)
    probes = Probes(cfg, problem, output_fields, outdir / "probes.csv", resumed is not None, t_keep)
    status, reason = "completed", None

    def write_fields(time_s):
        writer.write(output_fields.update(), time_s)

    def figure(name, initial=False):
        if not cfg.output.figures:
            return
        from .figures import plot_fields, plot_initial_state
        grid = gather_state(problem, output_fields)
        if initial:
            plot_initial_state(grid, figures_dir / name)
        else:
            plot_fields(grid, field_panels([grid]), figures_dir / name, title=f"{cfg.name}, t = {state['t']:.4g} s",
                        contour="eta")

    def save_checkpoint():
        meta = {"run": dict(state, controller_dt=controller.dt), "config_name": cfg.name}
        ckpt.write_checkpoint(checkpoints, problem.mesh, checkpoint_functions(problem), meta, comm,
                              step=state["steps"])

    if resumed is None:
        write_fields(0.0)
        figure("initial_state.png", initial=True)
        probes.record(0.0)
    diag = problem.diagnostics()
    last_checkpoint_wall = time.perf_counter()
    with _Interrupt() as interrupt:
        while not controller.finished(state["t"]):
            t = state["t"]
            if state["steps"] >= cfg.time.max_steps:
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
            state["t"] = t
            state["steps"] += 1
            state["newton_total"] += report.newton_iterations
            controller.accepted(report.newton_iterations, dt, landed)
            diag = problem.diagnostics()
            if state["short_circuit_time"] is None and diag.penetration_depth_m >= 0.5 * cfg.domain.size[0]:
                if metal_connects_electrodes(problem):
                    state["short_circuit_time"] = t
                    log(f"short circuit: metal connects the electrodes at t={t:.6e} s", 0)
                    if cfg.time.stop_at_short_circuit:
                        reason = "short circuit"
                        table.row(dict(vars(diag), t=t, dt=dt, newton_iterations=report.newton_iterations,
                                       linear_iterations=report.linear_iterations))
                        probes.record(t)
                        write_fields(t)
                        break
            table.row(dict(vars(diag), t=t, dt=dt, newton_iterations=report.newton_iterations,
                           linear_iterations=report.linear_iterations))
            probes.record(t)
            elapsed = time.perf_counter() - wall0
            remaining = elapsed / t * (cfg.time.t_end - t) if t > 0 else math.inf
            log(f"step {state['steps']:5d} t={t:.4e}/{cfg.time.t_end:.3e} s dt={dt:.2e} "
                f"newton={report.newton_iterations:2d} linear={report.linear_iterations:3d} "
                f"metal={diag.metal_fraction:.4f} depth={diag.penetration_depth_m * 1e9:.0f} nm "
                f"I={diag.electrode_current_A:.3e} ETA {_hms(remaining)}")
            if controller.is_output_time(t):
                write_fields(t)
                if cfg.output.figures_at_output_times and not controller.finished(t):
                    figure(f"fields_t{t:.4e}.png")
            if comm.allreduce(interrupt.flag, op=MPI.LOR):
                status, reason = "interrupted", "signal"
                log("signal received: writing a checkpoint and stopping", 0)
                break
            every = cfg.output.checkpoint_every_steps
            minutes = cfg.output.checkpoint_every_minutes
            due = (every and state["steps"] % every == 0) or (
                minutes and comm.bcast(time.perf_counter() - last_checkpoint_wall > 60 * minutes, root=0))
            if due:
                save_checkpoint()
                last_checkpoint_wall = time.perf_counter()

    if status != "completed" and not controller.is_output_time(state["t"]):
        write_fields(state["t"])  # keep what was computed
    if status != "diverged":
        save_checkpoint()
    writer.close()
    table.close()
    probes.close()
    grid = gather_state(problem, output_fields)
    if grid is not None:
        grid.save(str(outdir / "final_state.vtu"))
    figure("final_state.png")
    summary = {
        "status": status, "reason": reason, "t_final": state["t"], "steps": state["steps"],
        "newton_iterations": state["newton_total"], "wall_time_s": time.perf_counter() - wall0,
        "mpi_size": comm.size, "dofs": problem.dofs,
        "metal_fraction": diag.metal_fraction, "penetration_depth_m": diag.penetration_depth_m,
        "electrode_current_A": diag.electrode_current_A,
        "max_current_density_A_m2": diag.max_current_density_A_m2,
        "max_von_mises_Pa": diag.max_von_mises_Pa, "max_plastic_strain": diag.max_plastic_strain,
        "phi_gb_min_V": diag.phi_gb_min_V, "phi_gb_max_V": diag.phi_gb_max_V,
        "gb_mean_current_density_A_m2": diag.gb_mean_current_density_A_m2,
        "short_circuit": state["short_circuit_time"] is not None,
        "short_circuit_time_s": state["short_circuit_time"],
        "integral_eta": diag.integral_eta, "integral_c": diag.integral_c, "integral_phi": diag.integral_phi,
        "total_sodium_mol": diag.total_sodium_mol, "restarts": state["restarts"],
    }
    write_json(outdir / "summary.json", summary, comm)
    log(f"{status}: t={state['t']:.4e} s in {state['steps']} steps, {state['newton_total']} Newton iterations, "
        f"{summary['wall_time_s']:.1f} s wall", 0)
    log.close()
    return summary


def checkpoint_functions(problem: CoupledProblem) -> dict:
    """Everything a restart needs besides t/dt/step: the state and the plastic history."""
    funcs = {"state": problem.w}
    if problem.plastic is not None:
        funcs["plastic_strain_tensor"] = problem.plastic.eps_p
        funcs["equivalent_plastic_strain"] = problem.plastic.p
    return funcs


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
