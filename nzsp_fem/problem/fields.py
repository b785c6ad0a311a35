"""The field table: every unknown of the coupled problem, declared once.

The mixed space, the named views of a state, the field split, the VI bounds, the output
functions and the checkpoint layout are all derived from this table. Adding a scalar
unknown means: one entry here, its weak form in physics/forms.py, its config.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

from ..physics.scaling import Scaling


@dataclass(frozen=True)
class Field:
    """One unknown of the mixed space (values are scaled; ``si_scale`` converts to SI)."""

    name: str
    shape: tuple[int, ...]  # () scalar, (dim,) vector
    degree: int  # Lagrange degree
    si_scale: float  # SI value of one scaled unit
    outputs: tuple[tuple[str, float], ...]  # (output name, SI factor applied to the scaled value)
    # The iterative preset gives every field its own block of a multiplicative field split
    # and this preconditioner on it: "amg" for the diffusion/conduction/elasticity blocks
    # (elliptic, high-contrast coefficients), "ilu" or "jacobi" where the block is
    # mass-dominated (eta: L W dt is ~1e-5 of the mass; mu: its own block is a lumped mass).
    block_preconditioner: str
    lower: float | None = None  # variational-inequality bounds (solver.bounds)
    upper: float | None = None
    logarithmic: bool = False  # the unknown holds ln(value)
    initial: float | None = None  # uniform initial value (scaled), None: set by the start-up solves
    description: str = ""

    @property
    def is_vector(self) -> bool:
        return len(self.shape) > 0


def field_table(scaling: Scaling, dim: int) -> tuple[Field, ...]:
    """The unknowns for the config of ``scaling``, in mixed-space order."""
    cfg = scaling.cfg
    sc, ec = scaling, cfg.electrochemistry
    log_c = cfg.solver.log_concentration
    two = ec.potentials == "two"
    W = cfg.phase_field.barrier_height
    table = [
        Field(
            "eta",
            (),
            1,
            1.0,
            (("eta", 1.0),),
            "ilu",
            lower=0.0,
            upper=1.0,
            description="phase field: 1 Na metal, 0 electrolyte",
        ),
    ]
    if cfg.phase_field.kinetics == "bounded":
        # Read pointwise by the supply-limited rate; its old value is never used (initial 0
        # is only Newton's first guess).
        table.append(
            Field(
                "mu",
                (),
                1,
                W,
                (("driving_force_J_m3", W),),
                "jacobi",
                initial=0.0,
                description="phase-field driving force dF/deta / W",
            )
        )
    # The lower bound of c only applies to c itself: ln c is unbounded.
    table.append(
        Field(
            "c",
            (),
            1,
            ec.c0,
            (("c", 1.0), ("c_mol_m3", ec.c0)),
            "amg",
            lower=None if log_c else 0.0,
            logarithmic=log_c,
            initial=1.0,
            description="Na+ concentration / c0",
        )
    )
    # One potential: the paper's phi, named phi_i in both models (it is the potential of
    # the electrolyte's Na+ current); two: phi_e joins it.
    table.append(
        Field(
            "phi_i",
            (),
            1,
            sc.potential,
            (("phi_i_V" if two else "phi_V", sc.potential),),
            "amg",
            description="ionic potential / (RT/F)" if two else "electric potential / (RT/F)",
        )
    )
    if two:
        table.append(
            Field(
                "phi_e",
                (),
                1,
                sc.potential,
                (("phi_e_V", sc.potential),),
                "amg",
                description="electronic (electrode) potential / (RT/F)",
            )
        )
    if cfg.mechanics.enabled:
        table.append(
            Field(
                "u",
                (dim,),
                cfg.mechanics.displacement_degree,
                sc.length,
                (("u_m", sc.length),),
                "amg",
                description="displacement / l0",
            )
        )
    return tuple(table)


def views_type(table: tuple[Field, ...]):
    """A named-tuple type with one slot per field, for UFL views of a mixed function."""
    return namedtuple("FieldViews", [f.name for f in table])
