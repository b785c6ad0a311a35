"""PETSc options of the solver presets, and what the presets derive from the field table:
the field-split index sets and the variational-inequality bounds."""

from __future__ import annotations

import numpy as np

from petsc4py import PETSc

from dolfinx import fem

from ..config import Config
from ..problem import CoupledProblem

# SNES VI treats bounds beyond this magnitude as infinite.
SNES_VI_INFINITY = 1.0e20

_DIRECT = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


def solver_options(cfg: Config) -> dict:
    """PETSc options of the chosen preset, then the user's petsc_options on top."""
    s = cfg.solver
    opts = {
        "snes_type": "vinewtonrsls" if s.bounds else "newtonls",
        "snes_linesearch_type": "bt",
        "snes_rtol": s.rtol,
        "snes_atol": s.atol,
        "snes_stol": s.stol,
        "snes_max_it": s.max_it,
        "snes_max_linear_solve_fail": 1,
    }
    if s.preset == "direct":
        opts.update(_DIRECT)
        opts.update({"mat_mumps_icntl_14": 200, "mat_mumps_icntl_24": 1})
    else:
        # Field split: the stiff eta/c/phi block by additive Schwarz with LU on subdomains,
        # the displacement block by algebraic multigrid; GMRES outside.
        opts.update(
            {
                "ksp_type": "fgmres",
                "ksp_rtol": 1e-8,
                "ksp_max_it": 400,
                "ksp_gmres_restart": 200,
                "pc_type": "fieldsplit",
                "pc_fieldsplit_type": "multiplicative",
                "fieldsplit_chem_ksp_type": "preonly",
                "fieldsplit_chem_pc_type": "asm",
                "fieldsplit_chem_pc_asm_overlap": 2,
                "fieldsplit_chem_sub_pc_type": "lu",
                "fieldsplit_chem_sub_pc_factor_mat_solver_type": "mumps",
                "fieldsplit_mech_ksp_type": "preonly",
                "fieldsplit_mech_pc_type": "hypre",
                "fieldsplit_mech_pc_hypre_type": "boomeramg",
            }
        )
    opts.update(s.petsc_options)
    return opts


def linear_startup_options() -> dict:
    """A linear start-up solve (the initial potential): one direct solve."""
    return {"snes_type": "ksponly", **_DIRECT}


def nonlinear_startup_options(cfg: Config) -> dict:
    """A nonlinear start-up solve on one field (initial mechanics): the run's Newton settings
    with a direct solver in place of any field split."""
    opts = dict(solver_options(cfg))
    opts.update({"snes_type": "newtonls", **_DIRECT, "snes_max_it": 50})
    return {k: v for k, v in opts.items() if not k.startswith("fieldsplit") and "asm" not in k}


def field_index_set(problem: CoupledProblem, names, block_size: int = 1) -> PETSc.IS:
    """Owned global indices of the named fields in the mixed space."""
    W = problem.W
    imap = W.dofmap.index_map
    bs = W.dofmap.index_map_bs
    n_owned = imap.size_local * bs
    offset = imap.local_range[0] * bs
    idx = np.sort(np.concatenate([problem.subspaces[name][1] for name in names]))
    idx = idx[idx < n_owned] + offset
    index_set = PETSc.IS().createGeneral(idx.astype(PETSc.IntType), comm=problem.comm)
    # A node's displacement components are consecutive in the mixed numbering; telling
    # BoomerAMG so (nodal blocks) cut FGMRES iterations 152 -> 12 at 200k dofs (bench).
    index_set.setBlockSize(block_size)
    return index_set


def field_splits(problem: CoupledProblem) -> list[tuple[str, PETSc.IS]]:
    """(split name, index set) per split group of the field table, in table order."""
    groups: dict[str, list] = {}
    for f in problem.table:
        groups.setdefault(f.split, []).append(f)
    splits = []
    for name, members in groups.items():
        block = members[0].shape[0] if len(members) == 1 and members[0].is_vector else 1
        splits.append((name, field_index_set(problem, [f.name for f in members], block_size=block)))
    return splits


def variable_bounds(problem: CoupledProblem) -> tuple[fem.Function, fem.Function]:
    """(lower, upper) for SNES VI from the table's bounds; unbounded fields get +-infinity."""
    lower, upper = fem.Function(problem.W), fem.Function(problem.W)
    lower.x.array[:] = -SNES_VI_INFINITY
    upper.x.array[:] = SNES_VI_INFINITY
    for f in problem.table:
        dofs = problem.subspaces[f.name][1]
        if f.lower is not None:
            lower.x.array[dofs] = f.lower
        if f.upper is not None:
            upper.x.array[dofs] = f.upper
    return lower, upper
