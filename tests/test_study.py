"""A reduced GB-conductivity study end to end: one command, same mesh for every case,
study.csv / comparison.png / probe figure, and the direction of the paper's trend
(Figs. 7-8: a more conductive GB carries a higher current density).

The trend check can fail: if the GB conductivity did not reach the charge equation (a
lost beta, a wrong mixing rule) both cases would carry the same GB current.
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
    for name in ("comparison.png", "probes.png"):
        data = (study_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    for r in rows:
        case = study_dir / r["case"]
        assert json.loads((case / "summary.json").read_text())["status"] == "completed"
        assert (case / "fields" / "nodal.bp").is_dir()


def test_more_conductive_gb_carries_more_current(study_dir):
    if COMM.rank:
        return
    rows = list(csv.DictReader(open(study_dir / "study.csv")))
    low, high = (float(r["gb_mean_current_density_A_m2"]) for r in rows)
    print(f"GB mean |i|: sigma_GB 0.0125 S/m -> {low:.4g} A/m2, 25 S/m -> {high:.4g} A/m2")
    assert np.isfinite(low) and np.isfinite(high)
    assert high > 1.5 * low


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
