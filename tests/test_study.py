"""A reduced GB-conductivity study end to end: one command, same mesh for every case,
study.csv / comparison.png / probe figure, and the direction of the paper's trend
(Figs. 7-8: a more conductive GB carries a higher current density).

The trend check can fail: it is made on the ionic potential at a GB probe against Ohm
bounds, not on the GB current density (which multiplies by sigma_GB and so would differ
between the cases even if sigma_GB never reached the charge equation).
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mpi4py import MPI

from nzsp_fem.config import parse_config
from nzsp_fem.study import run_study

COMM = MPI.COMM_WORLD


def _reduced_study(outdir: Path):
    return parse_config(
        {
            "name": "gb-conductivity-reduced",
            "domain": {"size": ["0.6 um", "0.4 um"]},
            # A GB along y = 0.2 um meets the electrode where the nucleus sits.
            "microstructure": {
                "grains": 3,
                "seeds": [["0.2 um", "0.1 um"], ["0.2 um", "0.3 um"], ["0.5 um", "0.2 um"]],
            },
            "mesh": {"size_grain": "60 nm", "size_gb": "15 nm", "size_nucleus": "15 nm"},
            "nuclei": {"positions": [[0, "0.2 um"]], "radius": "60 nm"},
            "materials": {"transport": "nernst-einstein"},
            "phase_field": {"gradient_coefficient": "7.2e-10 J/m"},
            "mechanics": {"enabled": False},
            "time": {"t_end": "10 us", "dt_initial": "2 us", "n_outputs": 1},
            "output": {
                "directory": str(outdir),
                "verbosity": 0,
                "checkpoint_every_steps": 0,
                "probes": [{"name": "gb", "position": ["0.3 um", "0.2 um"]}],
            },
            "study": {"parameter": "materials.grain_boundary.conductivity", "values": ["0.0125 S/m", "25 S/m"]},
        }
    )


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    outdir = COMM.bcast(str(tmp_path_factory.mktemp("study")) if COMM.rank == 0 else None, root=0)
    outdir = Path(outdir) / "study"
    cfg = _reduced_study(outdir)
    assert run_study(cfg, outdir) == 0
    return outdir


def test_study_outputs(study_dir):
    if COMM.rank:
        return
    rows = list(csv.DictReader(open(study_dir / "study.csv")))
    assert [r["status"] for r in rows] == ["completed", "completed"]
    # Same mesh and microstructure for every case.
    assert len({r["dofs"] for r in rows}) == 1
    # No time.stop_at_charge: the cases are compared at equal time, and say so.
    assert [r["comparison"] for r in rows] == ["equal time", "equal time"]
    for name in ("comparison.png", "probes.png", "penetration.png"):
        data = (study_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    for r in rows:
        case = study_dir / r["case"]
        assert json.loads((case / "summary.json").read_text())["status"] == "completed"
        assert (case / "fields" / "nodal.bp").is_dir()


# Geometry of _reduced_study (um): the GB between seeds 1 and 2 runs along y = 0.2 from the
# electrode to the triple junction at x = 1/3 (equidistant from all three seeds); from
# there two GBs run to (0.4, 0) and (0.4, 0.4), a "V" that separates grain 3 (the
# reservoir side, x up to 0.6) from the nucleus. The probe (0.3, 0.2) lies on the y = 0.2 GB.
L_UM, H_UM, W_UM, X_PROBE_UM = 0.6, 0.4, 0.030, 0.3
X_JUNCTION_UM, X_V_EDGE_UM = 1.0 / 3.0, 0.4


def _x_v(y):
    """x (um) of the V-shaped GB pair at height y (um)."""
    return X_JUNCTION_UM + (X_V_EDGE_UM - X_JUNCTION_UM) * np.abs(y - 0.2) / 0.2


def ohm_bounds(sigma_se: float, sigma_gb: float) -> tuple[float, float]:
    """Bounds (Ohm m, per m of depth) on R = -phi_i(probe) / I, I the ionic current from the
    reservoir (phi_i = 0 at x = L). The ionic equation there is plain conduction: the
    deposition sink sits at the nucleus (x < 0.12 um), downstream of the probe.

    Both cases: every current line crosses the pure-grain, full-height slab
    x in [0.4 + w/2, L], whose mean potential drop is exactly I (L - 0.4 - w/2) / (sigma_SE H).

    sigma_GB >> sigma_SE (the V and the y = 0.2 GB are near-perfect wires: sheet
    conductance sigma_GB w = 19x that of the whole grain height): lower bound the slab;
    upper bound grain 3 cut into insulated horizontal strips of length L - x_V(y) in
    parallel (insulating cuts raise R), plus the drop along the GB wires (half of I along
    one oblique GB, all of I from the junction to the probe).

    sigma_GB << sigma_SE (a resistive V across the current path): lower bound the slab plus
    the V crossed uniformly over its whole length l_V, w (1/sigma_GB - 1/sigma_SE) / l_V;
    upper estimate (1D, not a strict bound: the current converges towards the nucleus)
    the homogeneous grain from the probe to the reservoir plus the V crossed as a straight
    full-height layer, with 20 % allowance for the convergence.
    """
    um = 1e-6
    slab = (L_UM - X_V_EDGE_UM - W_UM / 2) * um / (sigma_se * H_UM * um)
    branch = np.hypot(X_V_EDGE_UM - X_JUNCTION_UM, 0.2)
    if sigma_gb > sigma_se:
        y = np.linspace(0.0, H_UM, 4001)
        strips = 1.0 / (sigma_se * np.trapezoid(1.0 / (L_UM - _x_v(y)), y))  # um cancel
        wires = (0.5 * branch + (X_JUNCTION_UM - X_PROBE_UM)) * um / (sigma_gb * W_UM * um)
        return slab, strips + wires
    barrier = W_UM * um * (1.0 / sigma_gb - 1.0 / sigma_se)
    lower = slab + barrier / (2 * branch * um)
    upper = 1.2 * ((L_UM - X_PROBE_UM) * um / (sigma_se * H_UM * um) + barrier / (H_UM * um))
    return lower, upper


def test_more_conductive_gb_carries_more_current(study_dir):
    """The GB conductivity reaches the ionic charge equation, checked on phi_i alone.

    R = -phi_i(probe) / I_reservoir, with phi_i at the GB probe (probes.csv) and the ionic
    current entering at the reservoir (timeseries.csv, a residual over cells next to the
    right edge, where beta = 0: sigma_GB does not enter it), at the final time, must lie
    within the Ohm bounds of :func:`ohm_bounds` for each sigma_GB: ~[4.6, 6.0] Ohm m for
    25 S/m (the GB network short-circuits the ions from grain 3 to the probe) and
    ~[9.6, 15.3] Ohm m for 0.0125 S/m (the V-shaped GB blocks them). Measured: 5.37 and
    12.49 Ohm m.

    Catches a sigma_GB that never reaches the charge equation (both cases would give the
    homogeneous value, ~7.5 Ohm m, outside both windows), a GB conductivity applied with a
    wrong mixing (e.g. beta unused or inverted) and a probe or current at the wrong place.
    The paper's trend (Figs. 7-8, mean GB current density, which multiplies by sigma_GB
    itself and so is printed only) follows.
    """
    if COMM.rank:
        return
    rows = list(csv.DictReader(open(study_dir / "study.csv")))
    sigma_se = parse_config({}).materials.grain.conductivity
    resistances = []
    for r, sigma_gb in zip(rows, (0.0125, 25.0)):
        case = study_dir / r["case"]
        series = list(csv.DictReader(open(case / "timeseries.csv")))[-1]
        probe = list(csv.DictReader(open(case / "probes.csv")))[-1]
        assert float(series["t"]) == pytest.approx(10e-6, rel=1e-12)
        assert float(probe["t"]) == pytest.approx(10e-6, rel=1e-12)
        current = float(series["reservoir_current_A"])
        resistance = -float(probe["gb_phi_i_V"]) / current
        lo, hi = ohm_bounds(sigma_se, sigma_gb)
        print(
            f"sigma_GB {sigma_gb:g} S/m: phi_i(probe) = {float(probe['gb_phi_i_V']):+.6e} V, "
            f"I = {current:.6e} A/m, R = {resistance:.4f} Ohm m, Ohm bounds [{lo:.4f}, {hi:.4f}]; "
            f"GB mean |i| {float(r['gb_mean_current_density_A_m2']):.4g} A/m2"
        )
        assert current > 0
        assert lo <= resistance <= hi
        resistances.append(resistance)
    assert resistances[0] > 2 * resistances[1]


def test_outputs_open_in_vtk_and_adios2(study_dir):
    """ParaView's reader path: VTK reads the final-state VTU, ADIOS2 reads the VTX series."""
    if COMM.rank:
        return
    import pyvista

    first_case = next(csv.DictReader(open(study_dir / "study.csv")))["case"]
    grid = pyvista.read(study_dir / first_case / "final_state.vtu")
    assert grid.n_cells > 0
    eta = np.asarray(grid.point_data["eta"])
    assert eta.max() > 0.9 and eta.min() < 0.1
    assert np.all(np.isfinite(grid.point_data["phi_i_V"])) and np.all(np.isfinite(grid.point_data["phi_e_V"]))

    import adios2

    from nzsp_fem.io import checkpoint  # noqa: F401  (selects adios2's MPI bindings first)

    with adios2.FileReader(str(study_dir / first_case / "fields" / "nodal.bp")) as reader:
        variables = reader.available_variables()
        assert {"eta", "phi_i_V", "phi_e_V", "c"} <= set(variables)
        steps = int(variables["eta"]["AvailableStepsCount"])
        assert steps == 2  # t = 0 and the single output time
        last = reader.read("eta", step_selection=[steps - 1, 1])
        assert np.all(np.isfinite(last)) and last.max() > 0.9


@pytest.mark.parametrize(
    "charge, reason, basis",
    [
        (None, None, "equal time"),
        (1e-4, "charge reached", "equal charge"),
        (1e-4, "short circuit", "charge not reached"),
        (1e-4, "t_end reached before time.stop_at_charge", "charge not reached"),
    ],
)
def test_comparison_basis(charge, reason, basis):
    """study.csv labels each case: a case that ended before the common charge is not
    silently compared with the others."""
    from nzsp_fem.study import comparison_basis

    cfg = parse_config({"time": {"stop_at_charge": charge}})
    assert comparison_basis(cfg, {"reason": reason}) == basis
