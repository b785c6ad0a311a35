"""SNESProblem skips the lifting of the Dirichlet values only where it adds nothing.

The residual is F(x) with J[:, bc] (g - x) lifted into the free rows and x - g in the
Dirichlet rows. When x holds g exactly the lifting term is zero and is skipped; when it
does not, the lifted residual must come out, or Newton's step would ignore the coupling
of the free rows to the Dirichlet values it is about to correct.
"""

from __future__ import annotations

import numpy as np
import pytest

from mpi4py import MPI
from petsc4py import PETSc

import ufl
from dolfinx import fem, mesh
from dolfinx.fem import petsc as fem_petsc

from nzsp_fem.solver.snes import SNESProblem

OPTIONS = {"snes_type": "newtonls", "ksp_type": "preonly", "pc_type": "lu"}


def _problem():
    domain = mesh.create_unit_square(MPI.COMM_WORLD, 6, 6)
    V = fem.functionspace(domain, ("Lagrange", 1))
    u, v = fem.Function(V), ufl.TestFunction(V)
    x = ufl.SpatialCoordinate(domain)
    # Nonlinear, with a coefficient, so J[:, bc] (g - x) differs from zero for g != x.
    F = ((1 + u**2) * ufl.dot(ufl.grad(u), ufl.grad(v)) - (1 + x[0]) * v) * ufl.dx
    left = mesh.locate_entities_boundary(domain, 1, lambda p: np.isclose(p[0], 0.0))
    dofs = fem.locate_dofs_topological(V, 1, left)
    bc = fem.dirichletbc(fem.Constant(domain, 0.7), dofs, V)
    return SNESProblem(F, u, [bc], OPTIONS), u


def _residual_by_hand(problem: SNESProblem, x, lift: bool = True) -> np.ndarray:
    """The residual by the textbook DOLFINx sequence, with or without the lifting."""
    b = problem.b.duplicate()
    x.copy(problem.u.x.petsc_vec)
    problem.u.x.scatter_forward()
    with b.localForm() as b_local:
        b_local.set(0.0)
    fem_petsc.assemble_vector(b, problem.F_form)
    if lift:
        fem_petsc.apply_lifting(b, [problem.J_form], bcs=[problem.bcs], x0=[x], alpha=-1.0)
    b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    fem_petsc.set_bc(b, problem.bcs, x, -1.0)
    values = b.array_r.copy()
    b.destroy()
    return values


def _state(problem: SNESProblem, u, satisfy_bcs: bool):
    u.interpolate(lambda p: 0.3 + 0.5 * p[0] * p[1] + 0.2 * np.sin(3 * p[1]))
    x = u.x.petsc_vec.copy()
    if satisfy_bcs:
        fem_petsc.set_bc(x, problem.bcs)
    x.ghostUpdate(addv=PETSc.InsertMode.INSERT, mode=PETSc.ScatterMode.FORWARD)
    return x


@pytest.fixture
def problem_and_u():
    problem, u = _problem()
    yield problem, u
    problem.destroy()


def test_residual_equals_the_lifted_one_bit_for_bit_when_x_holds_the_bcs(problem_and_u):
    problem, u = problem_and_u
    x = _state(problem, u, satisfy_bcs=True)
    expected = _residual_by_hand(problem, x)
    b = problem.assemble_residual(x)
    assert np.array_equal(b.array_r, expected)


def test_residual_keeps_the_lifting_when_x_violates_the_bcs(problem_and_u):
    problem, u = problem_and_u
    x = _state(problem, u, satisfy_bcs=False)
    expected = _residual_by_hand(problem, x)
    b = problem.assemble_residual(x)
    np.testing.assert_allclose(b.array_r, expected, rtol=1e-13, atol=1e-13)
    # The lifting matters here: without it the free rows next to the boundary differ.
    unlifted = _residual_by_hand(problem, x, lift=False)
    gap = MPI.COMM_WORLD.allreduce(float(np.abs(unlifted - expected).max(initial=0.0)), op=MPI.MAX)
    assert gap > 1e-3
