"""The Jacobian holds only the field blocks its form couples (solver/snes.py).

A mixed space's element matrix is dense in the cell's dofs; SNESProblem keeps only the
blocks of fields that interact and skips the zeros of the others on insertion. What can go
wrong: a coupling missed by the form analysis (a Jacobian entry lost), a structure that a
later Jacobian outgrows, a fallback that is not taken where the analysis cannot see.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import merge
from test_jacobian import CONFIG

from mpi4py import MPI
from petsc4py import PETSc

import basix.ufl
import ufl
from dolfinx import fem, mesh
from dolfinx.fem import petsc as fem_petsc

from nzsp_fem.config import parse_config
from nzsp_fem.run import Simulation
from nzsp_fem.solver.snes import block_sparse_matrix, field_couplings

COMM = MPI.COMM_WORLD


def _mixed_square(n: int = 6):
    domain = mesh.create_unit_square(COMM, n, n)
    cell = domain.basix_cell()
    P1 = basix.ufl.element("Lagrange", cell, 1)
    V2 = basix.ufl.element("Lagrange", cell, 1, shape=(2,))
    return fem.functionspace(domain, basix.ufl.mixed_element([P1, P1, V2]))


def _same_action(A: PETSc.Mat, B: PETSc.Mat, seed: int = 3) -> float:
    x = A.createVecRight()
    x.setArray(np.random.default_rng(seed + COMM.rank).standard_normal(x.getLocalSize()))
    ya, yb = A.createVecLeft(), B.createVecLeft()
    A.mult(x, ya)
    B.mult(x, yb)
    yb.axpy(-1.0, ya)
    return yb.norm() / ya.norm()


@pytest.fixture(scope="module")
def stepped():
    """The coupled problem of test_jacobian (two potentials, bounded kinetics, plasticity)
    after two steps."""
    sim = Simulation(parse_config(merge({}, CONFIG)), COMM)
    sim.step(1e-5)
    sim.step(1e-5)
    yield sim
    sim.close()


def test_coupled_jacobian_equals_the_dense_block_one(stepped):
    """The solver's block-sparse Jacobian acts like the one with every cell block (to
    round-off), has fewer entries, and leaves out what the equations do not couple."""
    pb, snes = stepped.problem, stepped.solver.snes
    index = pb.index
    pairs = field_couplings(ufl.derivative(pb.F, pb.w), pb.W)
    assert pairs is not None
    # From the equations: u's rows see eta (eigenstrain, moduli) and u only; no transport
    # row sees u; mu's row sees u through the mechanical driving force; c's row sees mu
    # through the supply-limited rate.
    assert (index["u"], index["c"]) not in pairs and (index["c"], index["u"]) not in pairs
    assert (index["u"], index["eta"]) in pairs and (index["mu"], index["u"]) in pairs
    assert (index["c"], index["mu"]) in pairs
    x = pb.w.x.petsc_vec.copy()
    J = snes.assemble_jacobian(x)
    dense = fem_petsc.create_matrix(snes.J_form)
    fem_petsc.assemble_matrix(dense, snes.J_form, bcs=pb.bcs)
    dense.assemble()
    assert _same_action(dense, J) < 1e-13
    nnz = J.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_used"]
    nnz_dense = dense.getInfo(PETSc.Mat.InfoType.GLOBAL_SUM)["nz_used"]
    assert nnz < 0.75 * nnz_dense
    dense.destroy()


def test_couplings_of_a_small_mixed_form():
    """Fields 0 and 1 couple both ways, the vector field only to itself; a use of the whole
    argument (not a component) falls back to the dense blocks (None)."""
    W = _mixed_square()
    w, v = fem.Function(W), ufl.TestFunction(W)
    a, b, u = ufl.split(w)
    va, vb, vu = ufl.split(v)
    F = (a * b * va + b**2 * vb) * ufl.dx + ufl.inner(ufl.grad(u), ufl.grad(vu)) * ufl.dx
    assert field_couplings(ufl.derivative(F, w), W) == [(0, 0), (0, 1), (1, 1), (2, 2)]
    whole = ufl.inner(w, v) * ufl.dx
    assert field_couplings(ufl.derivative(whole, w), W) is None


def test_the_pattern_follows_each_form():
    """Entries outside a matrix's pattern are lost without an error on one rank (DOLFINx
    release builds do not check MatSetValuesLocal's status; off-process ones fail at
    assembly), so the pattern must come from the form itself: a form that also couples
    field 1 to field 0 gets that block, and its block-sparse Jacobian acts like the dense
    one (the narrower pattern would not)."""
    W = _mixed_square()
    w, v = fem.Function(W), ufl.TestFunction(W)
    w.x.array[:] = 1.0 + np.arange(w.x.array.size) % 5
    a, b, _ = ufl.split(w)
    va, vb, _ = ufl.split(v)
    narrow = field_couplings(ufl.derivative((a * va + b * vb) * ufl.dx, w), W)
    assert narrow == [(0, 0), (1, 1), (2, 2)]
    J = ufl.derivative((a * va + a * b * vb) * ufl.dx, w)
    wide = field_couplings(J, W)
    assert wide == [(0, 0), (1, 0), (1, 1), (2, 2)]
    form = fem.form(J)
    dense = fem_petsc.create_matrix(form)
    fem_petsc.assemble_matrix(dense, form)
    dense.assemble()
    errors = {}
    for name, pairs in (("narrow", narrow), ("wide", wide)):
        A = block_sparse_matrix(W, pairs)
        try:
            for _ in range(2):  # the structure is fixed before the first Jacobian
                A.zeroEntries()
                fem_petsc.assemble_matrix(A, form)
                A.assemble()
            errors[name] = _same_action(dense, A)
        except PETSc.Error:  # in parallel, an off-process entry is refused at assembly
            errors[name] = np.inf
        A.destroy()
    assert errors["wide"] < 1e-14
    assert errors["narrow"] > 1e-3
    dense.destroy()
