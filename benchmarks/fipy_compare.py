"""The runtime side of the FiPy comparison (issue 19, item 7): under bin/nzsp-env,

    python3 -m benchmarks.fipy_compare params OUT.json                # FiPy's parameters
    python3 -m benchmarks.fipy_compare nzsp --h 10e-9 [--preset P]    # one nzsp-fem run

Both codes read configs/bench/fipy_reduced.yaml: nzsp-fem directly, FiPy
(benchmarks/fipy_reduced.py, in its own venv) through the scaled parameters that
:func:`fipy_parameters` resolves with nzsp-fem's own code. benchmarks/fipy_table.py
drives both. A run is timed inside its process from the mesh to t_end (mesh set-up from
the cached gmsh file, forms, start-up solves, every step), not the interpreter start or
the imports; the form compiler's cache is warm after the first run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "bench" / "fipy_reduced.yaml"


def load(overrides: dict | None = None):
    import nzsp_fem

    return nzsp_fem.load_config(str(CONFIG), overrides=overrides or {})


def fipy_parameters(cfg) -> dict:
    """The scaled parameters of the FiPy model (benchmarks/fipy_reduced.py), from the
    config as nzsp-fem resolves it (Scaling, capped metal conductivity, per-phase D)."""
    from nzsp_fem.physics.scaling import Scaling

    sc = Scaling(cfg)
    pf, ec, t = cfg.phase_field, cfg.electrochemistry, cfg.time
    if cfg.nuclei.positions == "grain_centres" or len(cfg.nuclei.positions) != 1:
        raise ValueError("the FiPy model takes exactly one nucleus position")
    if pf.anisotropy.strength != 0 or cfg.mechanics.enabled or ec.potentials != "single":
        raise ValueError("the FiPy model is isotropic, single-potential, without mechanics")
    if pf.kinetics != "printed" or cfg.materials.transport == "single-ion":
        raise ValueError("the FiPy model has the printed kinetics and per-phase D")
    if cfg.microstructure.grains != 1 or ec.equilibrium_potential != 0:
        raise ValueError("the FiPy model has one grain and E_eq = 0")
    sigma, D = sc.conductivities(), sc.diffusivity()
    return {
        "length_scale": sc.length,
        "time_scale": sc.time,
        "size": list(cfg.domain.size),
        "nucleus_centre": list(cfg.nuclei.positions[0]),
        "nucleus_radius": cfg.nuclei.radius,
        # sqrt(2 kappa0 / W), the length of the initial tanh profile (physics/parameters.py)
        "interface_width": (2 * pf.gradient_coefficient / pf.barrier_height) ** 0.5,
        "electrode_potential": ec.electrode.potential / sc.potential,
        "mobility": sc.allen_cahn_mobility(),
        "gradient": sc.gradient_coefficient(),
        "reaction": pf.reaction_rate * sc.time,
        "reaction_ramp_time": pf.reaction_ramp_time,
        "alpha": pf.charge_transfer_coefficient,
        "electrons": pf.electrons,
        "site_ratio": ec.c_metal / ec.c0,
        "charge_source": sc.charge_source(),
        "conductivity_metal": sigma.metal,
        "conductivity_grain": sigma.grain,
        "diffusivity_metal": D.metal,
        "diffusivity_grain": D.grain,
        "t_end": t.t_end,
        "dt_initial": t.dt_initial,
        "dt_min": t.dt_min,
        "dt_max": t.dt_max,
        "growth_factor": t.growth_factor,
        "cut_factor": t.cut_factor,
        "easy_iterations": t.easy_iterations,
        "error_tolerance": t.error_tolerance,
        "max_interface_change": t.max_interface_change,
        # A sweep is converged when eta and c change by less than this (scaled); nzsp-fem's
        # Newton stops at a relative residual of solver.rtol.
        "sweep_tolerance": 1e-6,
        "max_sweeps": cfg.solver.max_it,
    }


def mesh_overrides(h: float, preset: str | None = None) -> dict:
    out = {"mesh.size_grain": h, "mesh.size_gb": h, "mesh.size_nucleus": h, "output.verbosity": 0}
    if preset:
        out["solver.preset"] = preset
    return out


def run_nzsp(h: float, preset: str | None = None) -> dict:
    """One nzsp-fem run on this process's communicator (1 rank): the measures and wall time."""
    from mpi4py import MPI

    from nzsp_fem.run import Simulation
    from nzsp_fem.solver.presets import preset_for

    cfg = load(mesh_overrides(h, preset))
    start, cpu_start = time.perf_counter(), time.process_time()
    sim = Simulation(cfg, comm=MPI.COMM_WORLD)
    sim.start()
    steps = newton = 0
    c_min, eta_min, eta_max = 1.0, 0.0, 1.0
    last = None
    while not sim.finished:
        info = sim.step()
        if info is None:
            break
        steps += 1
        newton += info.report.newton_iterations
        c = sim.problem.physical_values("c")
        e = sim.problem.sub_values("eta")
        c_min, eta_min, eta_max = min(c_min, float(c.min())), min(eta_min, float(e.min())), max(eta_max, float(e.max()))
        last = info
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    dofs = sim.problem.dofs
    out = {
        "code": "nzsp-fem",
        # solver.lumped_rate (on in configs/bench/fipy_reduced.yaml): benchmarks/fipy_table.py
        # reuses only "lumped" runs; runs recorded before the option have no marker.
        "phase_rate": "lumped" if cfg.solver.lumped_rate else "consistent",
        "h_m": h,
        "preset": preset_for(cfg, dofs),
        "unknowns": dofs,
        "metal_fraction": last.diagnostics.metal_fraction if last else float("nan"),
        "t": sim.t,
        "status": sim.status,
        "steps": steps,
        "newton": newton,
        "c_min": c_min,
        "eta_min": eta_min,
        "eta_max": eta_max,
        "wall_s": wall,
        "cpu_s": cpu,
    }
    sim.close()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p_params = sub.add_parser("params", help="write the FiPy parameters as JSON")
    p_params.add_argument("out")
    p_one = sub.add_parser("nzsp", help="one nzsp-fem run, result as JSON on stdout")
    p_one.add_argument("--h", type=float, required=True)
    p_one.add_argument("--preset", choices=["direct", "iterative", "auto"])
    args = ap.parse_args(argv)
    if args.command == "params":
        Path(args.out).write_text(json.dumps(fipy_parameters(load()), indent=1))
        return 0
    print(json.dumps(run_nzsp(args.h, args.preset), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
