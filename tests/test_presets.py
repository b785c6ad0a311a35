"""The rule of ``solver.preset: auto`` (``solver/presets.preset_for``, the one place that
decides) and the PETSc options it leads to, without building a problem.

The rule (measured by benchmarks/auto_crossover.py, docs/performance.md "The `auto`
preset"): the iterative field split at every size, since MUMPS was slower at every size
measured (0.8k to 88k unknowns, 2D and 3D); direct (MUMPS) whenever solver.bounds is on,
because SNES VI with the field split stops with "Zero block not allowed" once the active
set empties a block. tests/test_configurations.py runs the bounded growth with ``auto``
end to end.
"""

from __future__ import annotations

import pytest

from nzsp_fem.config import parse_config
from nzsp_fem.solver.presets import preset_for, solver_options

# From a few hundred unknowns to far beyond any run here; None: the size is not known.
SIZES = [None, 1, 500, 2_982, 20_000, 20_001, 88_000, 10_000_000]


def cfg(**solver):
    return parse_config({"solver": solver})


@pytest.mark.parametrize("dofs", SIZES)
def test_auto_with_bounds_is_direct_at_every_size(dofs):
    """Bounded Newton (vinewtonrsls) only works with MUMPS: auto must pick it whatever the
    size. Catches a size rule that sends a large bounded problem to the field split."""
    c = cfg(bounds=True)
    assert preset_for(c, dofs) == "direct"
    opts = solver_options(c, problem_dofs=dofs)
    assert opts["snes_type"] == "vinewtonrsls"
    assert opts["pc_type"] == "lu" and opts["pc_factor_mat_solver_type"] == "mumps"


@pytest.mark.parametrize("dofs", SIZES)
def test_auto_without_bounds_is_iterative_at_every_size(dofs):
    """Without bounds auto is the field split at every size, tiny ones included (MUMPS was
    1.4x slower per Newton iteration at 0.8k and 3k unknowns, more above). Catches the old 20k
    threshold (direct below it) or any size rule coming back unmeasured."""
    c = cfg()
    assert preset_for(c, dofs) == "iterative"
    opts = solver_options(c, problem_dofs=dofs)
    assert opts["snes_type"] == "newtonls"
    assert opts["pc_type"] == "fieldsplit" and opts["ksp_type"] == "fgmres"


@pytest.mark.parametrize("bounds", [False, True])
@pytest.mark.parametrize("preset", ["direct", "iterative"])
def test_an_explicit_preset_is_kept(preset, bounds):
    """An explicit preset is never overridden by the rule (iterative with bounds too: the
    user's choice, and the error PETSc gives is the user's to see)."""
    for dofs in SIZES:
        assert preset_for(cfg(preset=preset, bounds=bounds), dofs) == preset
