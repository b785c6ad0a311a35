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


# Block preconditioners of the iterative preset, by the field table's name for them.
# BoomerAMG with the settings hypre recommends beyond 2D Laplacians (HMIS coarsening,
# extended+i interpolation, at most 4 entries per interpolation row, strength 0.5):
# measured on the linear solve of the paper case (50.8k DOFs) 0.25 -> 0.19 s at equal
# iterations (7), on the 3D demo (104k DOFs, 2 ranks) 6.1 -> 1.4 s; aggressive coarsening
# of the finest level (agg_nl 1): 3D demo 0.7 s (15 iterations instead of 10). In 2D
# (282k DOFs, with the preconditioner lag below, idle machine, alternating runs) on every
# AMG block but the ionic potential's: 8.1 -> 9.8 linear iterations per Newton, 1.45-1.59
# against 1.73-1.85 s per Newton iteration; on the ionic potential's too: 12.8 iterations
# and 1.37-1.45 against 1.29-1.37 s without it there.
_AMG: dict[str, object] = {
    "ksp_type": "preonly",
    "pc_type": "hypre",
    "pc_hypre_type": "boomeramg",
    "pc_hypre_boomeramg_coarsen_type": "HMIS",
    "pc_hypre_boomeramg_interp_type": "ext+i",
    "pc_hypre_boomeramg_P_max": 4,
    "pc_hypre_boomeramg_strong_threshold": 0.5,
    "pc_hypre_boomeramg_agg_nl": 1,
}
# The ionic potential's block (named phi_i, formerly phi) keeps the standard coarsening in 2D.
_STANDARD_COARSENING_2D = ("phi", "phi_i")
_BLOCK: dict[str, dict[str, object]] = {
    "amg": _AMG,
    "ilu": {"ksp_type": "preonly", "pc_type": "bjacobi", "sub_pc_type": "ilu"},
    "jacobi": {"ksp_type": "preonly", "pc_type": "jacobi"},
}
# preset "auto": the field split, except with solver.bounds, where it must be MUMPS: SNES
# VI (vinewtonrsls) removes the active set's rows, and a split block left empty stops the
# solve with PETSc error 60 "Zero block not allowed". Measured
# (benchmarks/auto_crossover.py, 1 rank, one BLAS thread, the same fixed steps with both
# presets, CPU per Newton iteration, direct / iterative): 2D demo (mechanics, plasticity)
# 3.5x at 7.3k DOFs, 4.4x at 24k, 7.5x at 88k; FiPy reduced problem (no mechanics) 1.4x at
# 0.8k and at 3.0k, 2.6x at 11k, 4.0x at 45k; 3D demo 4.5x at 4.7k, 7.0x at 12k
# (docs/performance.md, "The `auto` preset"). MUMPS won at no size, so there is no size
# threshold (it was 20k unknowns, chosen before the crossover was measured). Tests that
# compare against exact linear solves ask for "direct" themselves.


def preset_for(cfg: Config, dofs: int | None = None) -> str:
    """The preset a run uses: the configured one; for "auto" the iterative field split,
    or direct (MUMPS) when SNES VI bounds are on. The size (``dofs``) does not enter the
    rule: MUMPS was slower at every size measured."""
    if cfg.solver.preset != "auto":
        return cfg.solver.preset
    return "direct" if cfg.solver.bounds else "iterative"


def solver_options(cfg: Config, table=(), problem_dofs: int | None = None) -> dict:
    """PETSc options of the chosen preset for a problem with these fields (table) and
    unknowns, then the user's petsc_options on top."""
    s = cfg.solver
    opts: dict[str, object] = {
        "snes_type": "vinewtonrsls" if s.bounds else "newtonls",
        "snes_linesearch_type": "bt",
        "snes_rtol": s.rtol,
        "snes_atol": s.atol,
        "snes_stol": s.stol,
        "snes_max_it": s.max_it,
        "snes_max_linear_solve_fail": 1,
    }
    if preset_for(cfg, problem_dofs) == "direct":
        opts.update(_DIRECT)
        opts.update({"mat_mumps_icntl_14": 200, "mat_mumps_icntl_24": 1})
    else:
        # One block per field (the field table says which preconditioner each gets),
        # visited in table order (multiplicative: a block Gauss-Seidel sweep), FGMRES
        # outside. No block is factorised, so the cost per iteration grows with the mesh
        # like the AMG V-cycles. Measured at 50k DOFs on the paper case: 7-10 iterations.
        # Linear tolerance 1e-5: Newton's own contraction per iteration is never below
        # ~1e-4 (residual histories like 2.9 -> 0.26 -> 6.9e-3 -> 5.4e-6 -> 1.2e-9), so a
        # tighter solve buys no Newton iteration (bench, 282k DOFs, 1 rank: 12.2 -> 7.6
        # linear iterations per Newton at 4.0 Newton per step either way; CPU per Newton
        # iteration -25 %). The block preconditioners (sub-matrices and AMG hierarchies)
        # are rebuilt at Newton iterations 0 and 3 and reused in between: FGMRES still
        # solves with the current Jacobian, so Newton's iterates do not change beyond the
        # linear tolerance (lag 2: 8.2 instead of 7.6 linear iterations, CPU a further
        # -25 %; lag 3 with agg_nl 1 in 2D: a further -15 % on an idle machine, 1.45-1.59
        # against 1.73-1.85 s per Newton iteration in alternating runs, 4.0 Newton per step).
        opts.update(
            {
                "ksp_type": "fgmres",
                "ksp_rtol": 1e-5,
                "snes_lag_preconditioner": 3,
                "ksp_max_it": 400,
                "ksp_gmres_restart": 100,
                "pc_type": "fieldsplit",
                "pc_fieldsplit_type": "multiplicative",
            }
        )
        for f in table:
            block = dict(_BLOCK[f.block_preconditioner])
            if f.block_preconditioner == "amg" and cfg.domain.dim == 2 and f.name in _STANDARD_COARSENING_2D:
                block["pc_hypre_boomeramg_agg_nl"] = 0
            opts.update({f"fieldsplit_{f.name}_{k}": v for k, v in block.items()})
    opts.update(s.petsc_options)
    return opts


def linear_startup_options() -> dict:
    """A linear start-up solve (the initial potential): one direct solve."""
    return {"snes_type": "ksponly", **_DIRECT}


def nonlinear_startup_options(cfg: Config) -> dict:
    """A nonlinear start-up solve on one field (initial mechanics): the run's Newton settings
    with a direct solver in place of any field split."""
    # A lagged preconditioner is a stale factorisation once the solve is direct: dropped.
    opts = {
        k: v for k, v in solver_options(cfg).items() if not k.startswith(("ksp_", "pc_", "fieldsplit", "snes_lag_"))
    }
    opts.update({"snes_type": "newtonls", **_DIRECT, "snes_max_it": 50})
    return opts


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
    """(split name, index set) per field of the field table, in table order."""
    return [
        (f.name, field_index_set(problem, [f.name], block_size=f.shape[0] if f.is_vector else 1)) for f in problem.table
    ]


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
