"""Morphology measures (nzsp_fem.problem.morphology) on hand-made fields with known answers.

A real CoupledProblem on a structured mesh whose GB cells are set by hand (a horizontal
band, tagged, DG0 beta), with eta, phi and |i| set from expressions. 2D: 1 x 0.5 um,
10 nm cells, GB band y in [0.22, 0.26] um, interface width w = 23.6 nm (kappa0 = 1e-9
J/m), so the planar margin (gb_width / 2 + 2 w = 67 nm) ends between vertex rows. The
scene: a flat Na layer of thickness A, a finger of radius 18 nm along the GB axis to
x = TIP, and an isolated disc farther out (radius 50 nm at the start, 60 nm now).
Tolerances are fractions of the cell size h: the measures use the P1 crossing of
eta = 0.5, so a formula that counts whole vertices or cells is off by up to h.

Runs serially and under ``mpirun -n 2 pytest -m "not serial"``; the rank-count test
compares the distributed evaluation with a serial one of the same scene on every rank.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from mpi4py import MPI

from dolfinx import fem
from dolfinx import mesh as dmesh

from nzsp_fem.config import parse_config
from nzsp_fem.mesh import BACK, BOTTOM, FRONT, GB_TAG, LEFT, RIGHT, TOP, Polycrystal, spec_from_config
from nzsp_fem.problem import CoupledProblem, DiagnosticsEvaluator, StartupProblems
from nzsp_fem.problem.morphology import (
    Geometry,
    Morphology,
    MorphologyEvaluator,
    measure_morphology,
    superlevel_fraction,
)

COMM = MPI.COMM_WORLD
UM = 1e-6
KAPPA = 1e-9  # J/m: w = sqrt(2 kappa / W) = 23.57 nm
H = 0.01  # um, 2D cell size
BAND = (0.22, 0.26)  # um, the GB band
AXIS = 0.24
A = 0.1075  # layer thickness, um: between vertex columns
TIP = 0.6065  # GB finger tip, um
R_FINGER = 0.018
DISC, R0, R1 = (0.85, 0.08), 0.05, 0.06


def width_um(kappa: float = KAPPA) -> float:
    """The interface width (um) for kappa0 and the default W = 3.6e6 J/m^3."""
    return math.sqrt(2 * kappa / 3.6e6) / UM


def profile(d, kappa: float = KAPPA):
    """eta of a signed distance d (um): the tanh of the initial nuclei."""
    return 0.5 * (1 - np.tanh(d / width_um(kappa)))


def capsule(x, p0, p1, r):
    """Signed distance (um) to a segment p0-p1 thickened by r; x is (dim, n)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    axis = p1 - p0
    length = np.linalg.norm(axis)
    rel = x[: len(p0)].T - p0
    t = np.clip(rel @ axis / length, 0, length)
    return np.linalg.norm(rel - t[:, None] * axis / length, axis=1) - r


def layer(x, a=A):
    return profile(x[0] - a)


def gb_finger(x, tip=TIP):
    return profile(capsule(x, (0.0, AXIS), (tip - R_FINGER, AXIS), R_FINGER))


def disc(x, r=R1):
    return profile(np.hypot(x[0] - DISC[0], x[1] - DISC[1]) - r)


def config(dim: int, size, gb_width, nuclei, radius, electrode_layer, kappa):
    return parse_config(
        {
            "domain": {"dim": dim, "size": [s * UM for s in size]},
            "microstructure": {"grains": 2, "gb_width": gb_width * UM},
            "nuclei": {
                "radius": radius * UM,
                "positions": [[p * UM for p in n] for n in nuclei] or "grain_centres",
                "electrode_layer": electrode_layer * UM,
            },
            "phase_field": {"gradient_coefficient": kappa},
            "mechanics": {"enabled": False},
        }
    )


def make_problem(
    comm,
    dim=2,
    size=(1.0, 0.5),
    cells=(100, 50),
    band=BAND,
    gb=True,
    nuclei=(DISC,),
    radius=R0,
    electrode_layer=A,
    kappa=KAPPA,
) -> CoupledProblem:
    """A CoupledProblem on a box mesh (um, the length unit) whose GB cells are those with
    their midpoint's last coordinate inside ``band``."""
    lo, hi = np.zeros(dim), np.array(size, dtype=float)
    if dim == 2:
        msh = dmesh.create_rectangle(comm, [lo, hi], list(cells))
    else:
        msh = dmesh.create_box(comm, [lo, hi], list(cells))
    tdim = msh.topology.dim
    imap = msh.topology.index_map(tdim)
    ids = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
    mid = dmesh.compute_midpoints(msh, tdim, ids)[:, dim - 1]
    in_band = (mid > band[0]) & (mid < band[1]) if gb else np.zeros(ids.size, bool)
    cell_tags = dmesh.meshtags(msh, tdim, ids, np.where(in_band, GB_TAG, 1).astype(np.int32))
    sides = [(LEFT, 0, 0.0), (RIGHT, 0, size[0]), (BOTTOM, 1, 0.0), (TOP, 1, size[1])]
    if dim == 3:
        sides += [(FRONT, 2, 0.0), (BACK, 2, size[2])]
    facets, values = [], []
    for tag, axis, at in sides:
        f = dmesh.locate_entities_boundary(msh, tdim - 1, lambda x: np.isclose(x[axis], at))
        facets.append(f)
        values.append(np.full(f.size, tag, dtype=np.int32))
    facets, values = np.concatenate(facets), np.concatenate(values)
    order = np.argsort(facets, kind="stable")
    facet_tags = dmesh.meshtags(msh, tdim - 1, facets[order], values[order])
    cfg = config(dim, size, band[1] - band[0], list(nuclei), radius, electrode_layer, kappa)
    nuclei_array = np.array(nuclei, dtype=float).reshape(-1, dim)
    poly = Polycrystal(
        mesh=msh,
        cell_tags=cell_tags,
        facet_tags=facet_tags,
        spec=dataclasses.replace(spec_from_config(cfg), representation="tagged"),
        grain_ids=[1],
        seeds=np.zeros((0, dim)),
        grain_centres=np.zeros((0, dim)),
        nuclei=nuclei_array,
        gb_segments=np.zeros((0, 2, 2)),
        gb_length=0.0,
        msh_path=Path("hand-made.msh"),
        key="hand-made",
    )
    return CoupledProblem(cfg, poly)


def coords(pb, name="eta"):
    return pb.collapsed_space(name).tabulate_dof_coordinates().T


def set_eta(pb, f):
    pb.set_sub("eta", f(coords(pb)))


@pytest.fixture(scope="module")
def scene():
    """The 2D problem with its evaluator, in the main scene (layer, GB finger, disc)."""
    pb = make_problem(COMM)
    set_eta(pb, lambda x: np.maximum.reduce([layer(x), gb_finger(x), disc(x)]))
    return pb, MorphologyEvaluator(pb)


def test_superlevel_fraction_matches_sampling():
    """The exact P1 superlevel fraction against 2e5 uniform samples of each simplex: a
    wrong corner or wedge formula (3D, two vertices above) is off by far more than 0.005."""
    rng = np.random.default_rng(1)
    for d in (2, 3):
        values = rng.uniform(0, 1, (60, d + 1))
        lam = rng.dirichlet(np.ones(d + 1), 200_000)
        sampled = np.array([(lam @ v > 0.5).mean() for v in values])
        assert np.abs(superlevel_fraction(values) - sampled).max() < 0.005
        assert set((values > 0.5).sum(axis=1)) >= set(range(1, d + 1))


def test_penetration_ignores_isolated_metal(scene):
    """Connected and GB penetration reach the finger tip, not the isolated disc beyond it
    (x = 0.91 um), within 0.05 h; a vertex-only maximum would stop at 0.60 (0.65 h short)."""
    m = scene[1]()
    assert m.connected_penetration_m == pytest.approx(TIP * UM, abs=0.05 * H * UM)
    assert m.gb_penetration_m == pytest.approx(TIP * UM, abs=0.05 * H * UM)


def test_planar_advance_is_the_layer_thickness(scene):
    """The GB finger stays within the margin and the disc is isolated: planar advance is
    the layer's thickness A within 0.05 h (counting the disc adds 35 nm, dividing by the
    whole face instead of its far part loses 36 % of A, vertex lumping is off by ~h/4)."""
    m = scene[1]()
    assert m.planar_advance_m == pytest.approx(A * UM, abs=0.05 * H * UM)


def test_branch_count_one_finger(scene):
    """One finger: one tip; neither the flat layer's skeleton ends nor the isolated disc
    count."""
    assert scene[1]().branch_count == 1


def test_isolated_metal_change(scene):
    """The disc grew from R0 = 50 nm (the config's nucleus, eta0) to R1 = 60 nm: the change
    is (R1^2 - R0^2) / R0^2 = 0.44; the initial isolated metal is pi R0^2."""
    pb, evaluator = scene
    assert evaluator.initial_isolated_metal == pytest.approx(math.pi * (R0 * UM) ** 2, rel=0.01)
    assert evaluator().isolated_metal_change == pytest.approx((R1**2 - R0**2) / R0**2, abs=0.01)
    # Passed in, it replaces the one from eta0.
    other = MorphologyEvaluator(pb, initial_isolated_metal=math.pi * (R1 * UM) ** 2)
    assert abs(other().isolated_metal_change) < 0.02


def scene_phi(pb, g):
    """phi (V) = g (x - 0.7 um)^+ on open GB-band vertices, -1 V on metal, +2 V in grains."""
    x = coords(pb, "phi_i")
    eta_at = np.maximum.reduce([layer(x), gb_finger(x), disc(x)])
    in_gb = (x[1] >= BAND[0] - 1e-9) & (x[1] <= BAND[1] + 1e-9)
    return np.where(eta_at > 0.5, -1.0, np.where(in_gb, g * np.maximum(x[0] - 0.7, 0.0), 2.0))


def test_gb_phi_i_span(scene):
    """With scene_phi, the span over GB vertices with eta < 0.5 is g 0.3 um, in V (phi is
    stored scaled); counting metal or grain vertices gives >= 1 V."""
    pb, evaluator = scene
    g = 0.1  # V/um
    old = pb.sub_values("phi_i").copy()
    pb.set_sub("phi_i", scene_phi(pb, g) / pb.scaling.potential)
    try:
        assert evaluator().gb_phi_i_span_V == pytest.approx(0.3 * g, rel=1e-9)
    finally:
        pb.set_sub("phi_i", old)


def test_smooth_beta_gives_the_same_answers():
    """beta as a P1 field (3D runs' "smooth" GBs): a tanh across the band, 0.5 on its edge
    rows. GB cells (mean vertex beta > 0.5) are then the band's cells, GB vertices
    (beta > 0.5) its inner rows: the scene's answers are unchanged, and the GB area share
    is the integral of beta, 0.04 um x 1 um of 0.5 um^2."""
    pb = make_problem(COMM)
    set_eta(pb, lambda x: np.maximum.reduce([layer(x), gb_finger(x), disc(x)]))
    beta = fem.Function(fem.functionspace(pb.mesh, ("Lagrange", 1)))
    beta.interpolate(lambda x: 0.5 * (1 - np.tanh((np.abs(x[1] - AXIS) - 0.02) / 0.004)))
    pb.beta = beta
    pb.set_sub("phi_i", scene_phi(pb, 0.1) / pb.scaling.potential)
    m = MorphologyEvaluator(pb)()
    assert m.gb_area_share == pytest.approx(0.08, rel=1e-3)
    assert m.connected_penetration_m == pytest.approx(TIP * UM, abs=0.05 * H * UM)
    assert m.gb_penetration_m == pytest.approx(TIP * UM, abs=0.05 * H * UM)
    assert m.planar_advance_m == pytest.approx(A * UM, abs=0.05 * H * UM)
    assert m.gb_phi_i_span_V == pytest.approx(0.03, rel=1e-9)
    assert m.branch_count == 1


def cell_means(pb, values):
    """Cell-mean of a P1 field (the eta space's numbering) for the local cells."""
    V = pb.collapsed_space("eta")
    return values[V.dofmap.list].mean(axis=1)


def test_max_interface_current(scene):
    """|i| is 50 + x(cell midpoint, um) A/m^2 on GB cells whose mean eta is in (0.05, 0.95),
    2000-5000 on GB metal, GB electrolyte and grain interface cells: the answer is 50 + the
    farthest such GB cell's midpoint, just beyond the finger tip."""
    pb, evaluator = scene
    msh = pb.mesh
    dg0 = fem.functionspace(msh, ("DG", 0))
    n = msh.topology.index_map(2).size_local + msh.topology.index_map(2).num_ghosts
    mid = dmesh.compute_midpoints(msh, 2, np.arange(n, dtype=np.int32))
    mean = cell_means(pb, pb.sub_values("eta"))
    gb = pb.beta.x.array[pb.beta.function_space.dofmap.list[:, 0]] > 0.5
    interface = (mean > 0.05) & (mean < 0.95)
    current = fem.Function(dg0)
    values = np.select(
        [gb & interface, gb & (mean >= 0.95), gb, interface], [50 + mid[:, 0], 3000.0, 2000.0, 5000.0], 10.0
    )
    current.x.array[dg0.dofmap.list[:, 0]] = values
    expected = 50 + COMM.allreduce(float(mid[gb & interface, 0].max(initial=-1)), op=MPI.MAX)
    # The tanh tail reaches mean eta = 0.05 about 1.5 w beyond the tip.
    assert TIP < expected - 50 < TIP + 2 * width_um()
    assert evaluator(current).max_interface_current_density_A_m2 == pytest.approx(expected, rel=1e-12)


def test_default_current_is_the_diagnostics_cell_field(scene):
    """Without an argument, |i| is the diagnostics' current_density_magnitude cell field."""
    pb, evaluator = scene
    x = coords(pb, "phi_i")
    pb.set_sub("phi_i", -0.2 * x[0] + 0.05 * x[1] ** 2)
    cells = DiagnosticsEvaluator(pb).cell_fields()
    given = evaluator(cells["current_density_magnitude"]).max_interface_current_density_A_m2
    assert math.isfinite(given) and given > 0
    assert evaluator().max_interface_current_density_A_m2 == pytest.approx(given, rel=1e-12)


def test_gb_metal_share():
    """New metal (eta - eta0)^+ of 0.5 on 33 vertices inside the band (all their cells GB)
    and 30 in a grain; eta0 - 0.3 on 12 band vertices by the electrode (dissolution, not
    new metal). Lumped P1 integrals are exact: share = 33 / 63; the band is 0.04 x 1 of
    0.5 um^2: gb_area_share = 0.08. Without the ^+ the share is 12.9 / 27.9."""
    pb = make_problem(COMM)
    x = coords(pb)
    eta0 = StartupProblems(pb).initial_eta(x)
    pb.set_sub("eta", eta0)
    evaluator = MorphologyEvaluator(pb)
    m = evaluator()
    assert math.isnan(m.gb_metal_share)
    assert m.gb_area_share == pytest.approx(0.08, rel=1e-12)

    def box(x0, x1, y0, y1):
        return (x[0] > x0 - 1e-9) & (x[0] < x1 + 1e-9) & (x[1] > y0 - 1e-9) & (x[1] < y1 + 1e-9)

    new = 0.5 * (box(0.40, 0.50, 0.23, 0.25) | box(0.40, 0.45, 0.40, 0.44))
    gone = 0.3 * box(0.0, 0.03, 0.23, 0.25)
    pb.set_sub("eta", eta0 + new - gone)
    assert evaluator().gb_metal_share == pytest.approx(33 / 63, rel=1e-9)


def test_two_fingers_and_a_y():
    """A grain finger to 0.75 um next to the GB finger, and an isolated rod beyond both: two
    tips (the rod's skeleton ends do not count); connected penetration is
    the grain finger's, GB penetration the GB finger's; the grain finger (far from the GB)
    adds its area beyond the layer over the far face (vertices more than 67 nm from the
    band: y <= 0.15 and y >= 0.33, 0.32 um) to the planar advance. A Y
    (stem in the GB, fork at 0.4 um, arms to (0.7, 0.40) and (0.7, 0.08)): two tips. The
    flat layer alone: none."""
    pb = make_problem(COMM)
    evaluator = MorphologyEvaluator(pb)
    r, tip = 0.02, 0.75

    def grain_finger(x):
        return profile(capsule(x, (0.0, 0.42), (tip - r, 0.42), r))

    def rod(x):
        """Isolated, elongated: its skeleton has two ends of its own."""
        return profile(capsule(x, (0.85, 0.1), (0.95, 0.1), 0.025))

    set_eta(pb, lambda x: np.maximum.reduce([layer(x), gb_finger(x), grain_finger(x), rod(x)]))
    m = evaluator()
    assert m.branch_count == 2
    assert m.connected_penetration_m == pytest.approx(tip * UM, abs=0.05 * H * UM)
    assert m.gb_penetration_m == pytest.approx(TIP * UM, abs=0.05 * H * UM)
    extra = 2 * r * (tip - r - A) + math.pi * r**2 / 2
    assert m.planar_advance_m == pytest.approx((A + extra / 0.32) * UM, abs=0.05 * H * UM)

    fork = (0.4, AXIS)

    def y_shape(x):
        arms = [capsule(x, (0.0, AXIS), fork, R_FINGER), capsule(x, fork, (0.7, 0.40), 0.02)]
        arms.append(capsule(x, fork, (0.7, 0.08), 0.02))
        return profile(np.minimum.reduce(arms))

    set_eta(pb, lambda x: np.maximum(layer(x), y_shape(x)))
    assert evaluator().branch_count == 2
    set_eta(pb, layer)
    m = evaluator()
    assert m.branch_count == 0
    assert m.connected_penetration_m == pytest.approx(A * UM, abs=0.05 * H * UM)


def test_without_gbs_the_gb_measures_are_nan():
    """No GB cell: every GB measure is NaN (null in summary.json), the GB area share 0; no
    isolated metal at the start: its change is NaN; the rest is still measured."""
    pb = make_problem(COMM, gb=False, nuclei=())
    set_eta(pb, lambda x: np.maximum(layer(x), gb_finger(x)))
    m = MorphologyEvaluator(pb)()
    for name in ("gb_penetration_m", "gb_metal_share", "gb_phi_i_span_V", "max_interface_current_density_A_m2"):
        assert math.isnan(getattr(m, name)), name
    assert math.isnan(m.isolated_metal_change)
    assert m.gb_area_share == 0.0
    assert m.connected_penetration_m == pytest.approx(TIP * UM, abs=0.05 * H * UM)
    assert m.branch_count == 1
    # No GB: the whole face is far; the finger adds its area beyond the layer.
    extra = 2 * R_FINGER * (TIP - R_FINGER - A) + math.pi * R_FINGER**2 / 2
    assert m.planar_advance_m == pytest.approx((A + extra / 0.5) * UM, abs=0.05 * H * UM)


def test_3d_slab_and_gb_finger():
    """3D: 0.5 x 0.2 x 0.45 um, 25 nm cells, GB slab z in [0.2, 0.25] um (w = 35 nm via
    kappa0, margin 96 nm: the far face is z <= 0.1 and z >= 0.35). A layer of 113.5 nm, a
    finger of radius 35 nm along the slab's mid-plane to x = 0.4115 um, an isolated
    sphere beyond it. The same answers as in 2D, within the same fractions of h."""
    kappa, h, a, tip, r = 2.25e-9, 0.025, 0.1135, 0.4115, 0.035
    pb = make_problem(
        COMM,
        3,
        (0.5, 0.2, 0.45),
        (20, 8, 18),
        (0.2, 0.25),
        nuclei=((0.46, 0.1, 0.05),),
        radius=0.03,
        electrode_layer=a,
        kappa=kappa,
    )
    assert pb.scaling.interface_width / UM == pytest.approx(width_um(kappa))

    def state(x):
        finger = profile(capsule(x, (0.0, 0.1, 0.225), (tip - r, 0.1, 0.225), r), kappa)
        sphere = profile(np.sqrt((x[0] - 0.46) ** 2 + (x[1] - 0.1) ** 2 + (x[2] - 0.05) ** 2) - 0.03, kappa)
        return np.maximum.reduce([profile(x[0] - a, kappa), finger, sphere])

    set_eta(pb, state)
    m = MorphologyEvaluator(pb)()
    assert m.connected_penetration_m == pytest.approx(tip * UM, abs=0.1 * h * UM)
    assert m.gb_penetration_m == pytest.approx(tip * UM, abs=0.1 * h * UM)
    assert m.planar_advance_m == pytest.approx(a * UM, abs=0.1 * h * UM)
    assert m.gb_area_share == pytest.approx(0.05 / 0.45, rel=1e-12)
    assert m.branch_count == 1
    assert abs(m.isolated_metal_change) < 0.05


def test_same_on_any_number_of_ranks():
    """The scene on COMM_WORLD (distributed under mpirun) and on COMM_SELF (serial, on every
    rank): the same measures, to round-off; the branch count exactly."""

    def evaluate(comm):
        pb = make_problem(comm)
        set_eta(pb, lambda x: np.maximum.reduce([layer(x), gb_finger(x), disc(x)]))
        x = coords(pb, "phi_i")
        pb.set_sub("phi_i", -0.3 * x[0] + 0.1 * np.sin(7 * x[1]))
        return MorphologyEvaluator(pb)()

    world, alone = evaluate(COMM), evaluate(MPI.COMM_SELF)
    for name in Morphology.names():
        a, b = getattr(world, name), getattr(alone, name)
        assert a == pytest.approx(b, rel=1e-10, nan_ok=True), name
    assert world.branch_count == alone.branch_count == 1


def test_pure_part_without_dolfinx():
    """The numpy part alone on a 2-triangle square (1 x 1 m): a layer whose 0.5 crossing is
    at x = 0.75 everywhere; no GBs."""
    points = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    cells = np.array([[0, 1, 2], [0, 2, 3]])
    geo = Geometry(points, cells, gb_width=0.1, width=0.05)
    eta = np.array([1.0, 1 / 3, 1 / 3, 1.0])  # 1 - 2x/3: 0.5 at x = 0.75
    m = measure_morphology(geo, eta, np.zeros(4), np.zeros(4), np.zeros(2), 0.0)
    # A flat front at x = 0.75: area 0.75 over a unit face.
    assert m.connected_penetration_m == pytest.approx(0.75)
    assert m.planar_advance_m == pytest.approx(0.75)
    assert m.gb_metal_share != m.gb_metal_share  # NaN: no GBs
