"""The reduced problem of configs/bench/fipy_reduced.yaml in FiPy 4.0.3 (issue 19, item 7).

Runs in the bench-only venv (`make bench-fipy` makes .venv-fipy), never in the runtime:

    .venv-fipy/bin/python benchmarks/fipy_reduced.py PARAMS.json --h 10e-9 [--out result.json]

PARAMS.json holds the scaled parameters that benchmarks/fipy_compare.py resolves from the
YAML with nzsp-fem's own code, so both solvers read one set of numbers. The equations are
docs/model.md's printed single-potential model without mechanics (scaled: lengths / l0,
time / t0, phi / (RT/F), conductivities / sigma_SE, concentrations / c0):

    d eta/dt = M [G lap eta - g'(eta)] - k(t) h'(eta) [exp((1-a) phi) - c exp(-a phi)]   eq. 1
    dc/dt    = div(D grad c + D c grad phi) - s d eta/dt                                  eq. 4
    0        = div(sigma grad phi) - Q d eta/dt                                           eq. 5

on a uniform grid of square cells (FiPy's Grid2D, cell-centred finite volumes) with the
usual FiPy choices: exponential fitting of the drift (ExponentialConvectionTerm), harmonic
face means of D and sigma, the three equations coupled in one linear system per sweep with
the reaction source linearised in all three unknowns (implicit; D, sigma and the drift
velocity lagged by one sweep), sweeps until eta and c change by less than 1e-6, and
FiPy's default linear solver (LinearLUSolver: SuperLU through scipy). The step rule is
nzsp-fem's own StepController, loaded from its file, with the same error estimate
(predictor distance) and interface cap, so that the time error is controlled alike and
the comparison is about space.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import sys
import time

import numpy as np


def _step_controller_class():
    """nzsp_fem.solver.timestepping.StepController without importing the package (which
    needs DOLFINx): the module depends on the standard library only."""
    path = pathlib.Path(__file__).resolve().parents[1] / "nzsp_fem" / "solver" / "timestepping.py"
    spec = importlib.util.spec_from_file_location("nzsp_timestepping", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.StepController


def h_step(x):
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (6 * x**2 - 15 * x + 10)


def dh(x):
    x = np.clip(x, 0.0, 1.0)
    return 30 * x**2 * (1 - x) ** 2


def d2h(x):
    inside = (x > 0) & (x < 1)
    return np.where(inside, 60 * x * (1 - x) * (1 - 2 * x), 0.0)


def g1(x):  # g'(eta)/W
    return 2 * x * (1 - x) * (1 - 2 * x)


def g2(x):  # g''(eta)/W
    return 2 - 12 * x + 12 * x**2


def _newton_source_term(fp):
    """FiPy's ImplicitSourceTerm, but implicit whatever the coefficient's sign.

    FiPy moves a source whose coefficient would weaken the diagonal to the right-hand side
    (explicit in the current sweep), a safeguard for a lone equation. Here the
    coefficients are the reaction's Jacobian: made explicit, the couplings of the
    Butler-Volmer term to c and (where it grows) eta are lagged and each step needs a
    sweep per digit instead of a Newton iteration (measured at 20 nm: 8 sweeps a step)."""

    from fipy.terms.implicitSourceTerm import ImplicitSourceTerm

    class NewtonSourceTerm(ImplicitSourceTerm):
        def _getWeight(self, var, transientGeomCoeff=None, diffusionGeomCoeff=None):
            zeros = fp.numerix.zeros(var.shape, "d")
            return {
                "diagonal": fp.numerix.ones(var.shape, "d"),
                "old value": zeros,
                "b vector": zeros,
                "new value": zeros,
            }

    return NewtonSourceTerm


def run(p: dict, h: float, verbose: bool = False, face_mean: str = "harmonic") -> dict:
    """Solve to t_end on cells of side h (m); returns the measures and the wall time.

    ``face_mean``: how D and sigma reach the faces, "harmonic" (series conduction, FiPy's
    usual choice for a coefficient that jumps) or "arithmetic" (what P1 finite elements do
    by integrating the mixed sigma(eta) over each cell)."""
    import fipy as fp

    Source = _newton_source_term(fp)

    start, cpu_start = time.perf_counter(), time.process_time()
    l0, t0 = p["length_scale"], p["time_scale"]
    lx, ly = p["size"][0] / l0, p["size"][1] / l0
    nx, ny = round(lx * l0 / h), round(ly * l0 / h)
    mesh = fp.Grid2D(dx=lx / nx, dy=ly / ny, nx=nx, ny=ny)
    x, y = mesh.cellCenters
    cx, cy = p["nucleus_centre"][0] / l0, p["nucleus_centre"][1] / l0
    radius, width = p["nucleus_radius"] / l0, p["interface_width"] / l0

    eta = fp.CellVariable(mesh=mesh, name="eta", hasOld=True)
    c = fp.CellVariable(mesh=mesh, name="c", value=1.0, hasOld=True)
    phi = fp.CellVariable(mesh=mesh, name="phi", hasOld=True)
    r = np.sqrt((np.asarray(x) - cx) ** 2 + (np.asarray(y) - cy) ** 2)
    eta.setValue(0.5 * (1 - np.tanh((r - radius) / width)))

    phi_app = p["electrode_potential"]
    phi.constrain(phi_app, mesh.facesLeft)
    phi.constrain(0.0, mesh.facesRight)
    c.constrain(1.0, mesh.facesRight)

    M, G, a, s, Q = p["mobility"], p["gradient"], p["alpha"], p["site_ratio"], p["charge_source"]
    sig_m, sig_g = p["conductivity_metal"], p["conductivity_grain"]
    D_m, D_g = p["diffusivity_metal"], p["diffusivity_grain"]
    n = p["electrons"]

    # Lagged coefficient fields (updated before every sweep).
    sigma = fp.CellVariable(mesh=mesh, value=sig_g)
    D = fp.CellVariable(mesh=mesh, value=D_g)
    f_eta = fp.CellVariable(mesh=mesh)
    f_c = fp.CellVariable(mesh=mesh)
    f_phi = fp.CellVariable(mesh=mesh)
    f_rest = fp.CellVariable(mesh=mesh)
    dtv = fp.Variable(value=1.0)

    def update_coefficients(k: float) -> None:
        e, cc, ph = np.asarray(eta.value), np.asarray(c.value), np.asarray(phi.value)
        he = h_step(e)
        sigma.setValue(he * sig_m + (1 - he) * sig_g)
        D.setValue(he * D_m + (1 - he) * D_g)
        A, B = np.exp((1 - a) * n * ph), np.exp(-a * n * ph)
        bv = A - cc * B
        f = -M * g1(e) - k * dh(e) * bv
        fe = -M * g2(e) - k * d2h(e) * bv
        fc = k * dh(e) * B
        fp_ = -k * dh(e) * n * ((1 - a) * A + a * cc * B)
        f_eta.setValue(fe)
        f_c.setValue(fc)
        f_phi.setValue(fp_)
        f_rest.setValue(f - fe * e - fc * cc - fp_ * ph)

    def at_faces(field):
        return field.harmonicFaceValue if face_mean == "harmonic" else field.arithmeticFaceValue

    # Steady conduction with the initial eta (nzsp-fem's potential start-up).
    update_coefficients(0.0)
    fp.DiffusionTerm(coeff=at_faces(sigma), var=phi).solve(var=phi)

    drift = -n * at_faces(D) * phi.faceGrad
    eq_eta = fp.TransientTerm(var=eta) == (
        fp.DiffusionTerm(coeff=M * G, var=eta)
        + Source(coeff=f_eta, var=eta)
        + Source(coeff=f_c, var=c)
        + Source(coeff=f_phi, var=phi)
        + f_rest
    )
    eq_c = fp.TransientTerm(var=c) + fp.TransientTerm(coeff=s, var=eta) + fp.ExponentialConvectionTerm(
        coeff=drift, var=c
    ) == fp.DiffusionTerm(coeff=at_faces(D), var=c)
    eq_phi = fp.DiffusionTerm(coeff=at_faces(sigma), var=phi) == fp.TransientTerm(coeff=Q, var=eta)
    system = eq_eta & eq_c & eq_phi
    # FiPy's default solver (SuperLU through scipy), but judged against the initial
    # residual: with the default criterion (residual below 1e-5 |b|) it returned the
    # starting guess unchanged, because the metal's charge rows (sigma 2.5e4 / h^2) make
    # |b| huge while the eta and c rows' residual is small against it.
    solver = fp.LinearLUSolver(criterion="initial", tolerance=1e-10)

    StepController = _step_controller_class()
    t_end = p["t_end"]
    ctl = StepController(
        t_end=t_end,
        dt=p["dt_initial"],
        dt_min=p["dt_min"],
        dt_max=p["dt_max"],
        growth=p["growth_factor"],
        cut=p["cut_factor"],
        easy_iterations=p["easy_iterations"],
        output_times=[t_end],
        error_tolerance=p["error_tolerance"],
        max_interface_change=p["max_interface_change"],
    )
    ramp = p["reaction_ramp_time"]

    def reaction(t_si: float) -> float:
        return p["reaction"] * (1.0 if ramp <= 0 else min(1.0, (t_si / ramp) ** 2))

    fields = (eta, c, phi)
    old = [np.array(v.value) for v in fields]
    prev: list[np.ndarray] | None = None
    dt_prev: float | None = None
    skip_history = True
    t, steps, sweeps_total, rejected, failed = 0.0, 0, 0, 0, 0
    c_min, eta_min, eta_max = 1.0, 0.0, 1.0
    tol_sweep, max_sweeps = p["sweep_tolerance"], p["max_sweeps"]
    while not ctl.finished(t):
        dt, landed = ctl.propose(t)
        dtv.setValue(dt / t0)
        k = reaction(t + dt)
        for v, o in zip(fields, old):
            v.setValue(o)
            v.updateOld()
        predicted = None
        if dt_prev:
            ratio = dt / dt_prev
            predicted = [o + ratio * (o - q) for o, q in zip(old, prev)]  # type: ignore[arg-type]
            for v, guess in zip(fields, predicted):
                v.setValue(guess)
        converged, sweeps = False, 0
        while sweeps < max_sweeps:
            before = [np.array(v.value) for v in fields]
            update_coefficients(k)
            system.sweep(dt=dt / t0, solver=solver)
            sweeps += 1
            change = max(float(np.max(np.abs(np.asarray(v.value) - b))) for v, b in zip(fields[:2], before[:2]))
            if not all(np.all(np.isfinite(np.asarray(v.value))) for v in fields):
                break
            if change < tol_sweep:
                converged = True
                break
        sweeps_total += sweeps
        if not converged:
            failed += 1
            for v, o in zip(fields, old):
                v.setValue(o)
            if not ctl.failed(dt):
                raise RuntimeError(f"FiPy run diverged at t = {t:.3e} s (dt {dt:.2e} s)")
            continue
        e_new, c_new = np.asarray(eta.value), np.asarray(c.value)
        interface_change = float(np.max(np.abs(e_new - old[0])))
        error = None
        if predicted is not None:
            electrolyte = 1.0 - h_step(e_new)
            distance = max(
                float(np.max(np.abs(e_new - predicted[0]))),
                float(np.max(electrolyte * np.abs(c_new - predicted[1]))),
            )
            error = distance * dt / (2 * dt + dt_prev)  # type: ignore[operator]
        if ctl.too_inaccurate(error):
            rejected += 1
            for v, o in zip(fields, old):
                v.setValue(o)
            if not ctl.rejected(dt, error):
                raise RuntimeError(f"FiPy run: dt below dt_min at t = {t:.3e} s")
            continue
        # Sweeps converge linearly (FiPy treats the reaction's positive-sloped couplings
        # explicitly), so their count is no Newton count: the step follows the accuracy
        # and the interface cap only, never held back as a "hard" solve.
        ctl.accepted(1, dt, landed, error=error, interface_change=interface_change)
        prev, old = old, [np.array(v.value) for v in fields]
        dt_prev = None if skip_history else dt
        skip_history = False
        t += dt
        steps += 1
        c_min, eta_min, eta_max = (
            min(c_min, float(c_new.min())),
            min(eta_min, float(e_new.min())),
            max(eta_max, float(e_new.max())),
        )
        if verbose:
            frac = float(np.sum(e_new * mesh.cellVolumes) / np.sum(mesh.cellVolumes))
            print(f"step {steps:4d} t={t:.4e} dt={dt:.2e} sweeps={sweeps} metal={frac:.5f}", flush=True)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    volumes = np.asarray(mesh.cellVolumes)
    return {
        "code": "fipy",
        "h_m": h,
        "cells": nx * ny,
        "unknowns": 3 * nx * ny,
        "metal_fraction": float(np.sum(np.asarray(eta.value) * volumes) / np.sum(volumes)),
        "steps": steps,
        "sweeps": sweeps_total,
        "rejected": rejected,
        "failed": failed,
        "c_min": c_min,
        "eta_min": eta_min,
        "eta_max": eta_max,
        "wall_s": wall,
        "cpu_s": cpu,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("params", help="JSON of scaled parameters (benchmarks/fipy_compare.py writes it)")
    ap.add_argument("--h", type=float, required=True, help="cell size (m)")
    ap.add_argument("--out", help="write the result as JSON here")
    ap.add_argument("--face-mean", choices=["harmonic", "arithmetic"], default="harmonic")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    params = json.loads(pathlib.Path(args.params).read_text())
    result = run(params, args.h, verbose=args.verbose, face_mean=args.face_mean)
    result["face_mean"] = args.face_mean
    text = json.dumps(result, indent=1)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    print(text)
    return 0 if math.isfinite(result["metal_fraction"]) else 1


if __name__ == "__main__":
    sys.exit(main())
