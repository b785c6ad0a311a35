"""Nernst-Einstein diffusivity and the dimensionless groups of nzsp_fem.scaling against
hand evaluations (issue 12, item 4).

The constants are written here (CODATA 2018, exact SI values) and every expected number is
evaluated in this file from docs/model.md's formulas, never read back from the package:
    D_NE = sigma R T / (n^2 F^2 c0)                        (single mobile ion, charge n)
    t0 = 1/L_eta (default), L W t0, kappa0/(W l0^2), L_eta t0, E_SE/W, D t0/l0^2,
    n F c_m l0^2 / (sigma_SE V_T t0) with V_T = R T / F, c_m/c0, phi_app/V_T.
Pure Python: no mesh, the same on every rank (MPI-safe).
"""

from __future__ import annotations

import math

import pytest

from nzsp_fem.config import parse_config
from nzsp_fem.physics.scaling import Scaling


def diffusivity(cfg, phase: str) -> float:
    """D (m^2/s) of one phase, as the solver reads it from the config."""
    return getattr(Scaling(cfg).diffusivities_si(), phase)


def nernst_einstein_diffusivity(conductivity: float, cfg) -> float:
    return Scaling(cfg).nernst_einstein_diffusivity(conductivity)


F = 96485.33212  # C/mol
R = 8.314462618  # J/(mol K)


def test_nernst_einstein_hand_value():
    """sigma = 0.1 S/m, c0 = 1e4 mol/m^3, T = 298.15 K, n = 1:
    R T = 2478.957 J/mol, F^2 = 9.30942e9 C^2/mol^2, D = 0.1 * 2478.957 / (9.30942e9 * 1e4)
    = 2.6628e-12 m^2/s (docs/model.md: 2.66e-12, 180x Table 1's D_SE = 1.5e-14). n = 2: D / 4.

    Catches: F instead of F^2, a missing T or R, c0 in the numerator, n instead of n^2 (or no
    n at all), the value in cm^2/s.
    """
    cfg = parse_config({})
    assert cfg.electrochemistry.temperature == 298.15 and cfg.electrochemistry.c0 == 1e4
    expected = 0.1 * R * 298.15 / (F**2 * 1e4)
    D = nernst_einstein_diffusivity(0.1, cfg)
    assert math.isclose(D, expected, rel_tol=1e-12)
    assert abs(D / 2.66e-12 - 1.0) < 2e-3  # docs/model.md's printed 2.66e-12 (3 digits)
    assert 170 < D / 1.5e-14 < 190  # "180x Table 1's D_SE"

    cfg2 = parse_config({"phase_field": {"electrons": 2}})
    assert math.isclose(nernst_einstein_diffusivity(0.1, cfg2), expected / 4, rel_tol=1e-12)

    # Other T and c0 scale as T / c0.
    cfg3 = parse_config({"electrochemistry": {"temperature": 350.0, "c0": 2.0e4}})
    assert math.isclose(nernst_einstein_diffusivity(0.25, cfg3), 0.25 * R * 350.0 / (F**2 * 2.0e4), rel_tol=1e-12)


def test_transport_option_uses_nernst_einstein_for_electrolyte_only():
    """transport = nernst-einstein: D_SE and D_GB follow sigma_SE = 0.1 and sigma_GB = 0.25
    S/m (2.6628e-12 and 6.657e-12 m^2/s), D_metal keeps Table 1's 1.5e-16; "independent"
    keeps 1.5e-14 for the grain and D_GB = D_SE by default.
    Catches: GB diffusivity derived from the grain conductivity (no GB study coupling), the
    metal replaced by Nernst-Einstein of 1e7 S/m (2.7e-4 m^2/s), the option ignored."""
    ne = parse_config({"materials": {"transport": "nernst-einstein"}})
    per_siemens = R * 298.15 / (F**2 * 1e4)
    assert math.isclose(diffusivity(ne, "grain"), 0.1 * per_siemens, rel_tol=1e-12)
    assert math.isclose(diffusivity(ne, "grain_boundary"), 0.25 * per_siemens, rel_tol=1e-12)
    assert diffusivity(ne, "metal") == 1.5e-16
    ind = parse_config({"materials": {"transport": "independent"}})
    assert diffusivity(ind, "grain") == 1.5e-14
    assert diffusivity(ind, "grain_boundary") == 1.5e-14
    assert diffusivity(ind, "metal") == 1.5e-16


def test_single_ion_transport_follows_the_charge_equations_conductivity():
    """single-ion (the default): every phase's D is Nernst-Einstein of its conductivity in the
    charge equation: grain 0.1 S/m, GB 0.25 S/m, and with two potentials the metal's ionic
    floor, 1e-3 x 0.1 S/m; with one potential the metal keeps Table 1's D_DE (its
    conductivity there is electronic). Catches D_metal from the metal's 1e7 S/m, the
    floor ignored, or the default left at Table 1's inconsistent D."""
    per_siemens = R * 298.15 / (F**2 * 1e4)
    two = parse_config({})
    assert two.materials.transport == "single-ion"
    assert math.isclose(diffusivity(two, "grain"), 0.1 * per_siemens, rel_tol=1e-12)
    assert math.isclose(diffusivity(two, "grain_boundary"), 0.25 * per_siemens, rel_tol=1e-12)
    assert math.isclose(diffusivity(two, "metal"), 1e-4 * per_siemens, rel_tol=1e-12)
    one = parse_config({"electrochemistry": {"potentials": "single"}})
    assert math.isclose(diffusivity(one, "grain"), 0.1 * per_siemens, rel_tol=1e-12)
    assert diffusivity(one, "metal") == 1.5e-16


def hand_groups(
    l0,
    t0,
    n=1,
    L=1e-8,
    W=3.6e6,
    kappa0=1.8e-10,
    L_eta=0.6,
    E_se=50e9,
    D_se=1.5e-14,
    D_de=1.5e-16,
    D_gb=1.5e-14,
    sigma_se=0.1,
    sigma_gb=0.25,
    c_m=9.71e4,
    c0=1e4,
    T=298.15,
    phi_app=-0.45,
    cap=1e4,
):
    V_T = R * T / F
    return {
        "allen_cahn_mobility  L W t0": L * W * t0,
        "gradient  kappa0/(W l0^2)": kappa0 / (W * l0**2),
        "reaction  L_eta t0": L_eta * t0,
        "stress/energy  E_grain/W": E_se / W,
        "diffusion grain  D t0/l0^2": D_se * t0 / l0**2,
        "diffusion metal  D t0/l0^2": D_de * t0 / l0**2,
        "diffusion GB  D t0/l0^2": D_gb * t0 / l0**2,
        "deposition charge  n F c_m l0^2/(sigma V_T t0)": n * F * c_m * l0**2 / (sigma_se * V_T * t0),
        "site ratio  c_m/c0": c_m / c0,
        # sigma_metal capped at cap x max(sigma_SE, sigma_GB) = 1e4 * 0.25 = 2500 S/m
        "conductivity contrast  sigma_metal/sigma_grain (solver)": min(1e7, cap * max(sigma_se, sigma_gb)) / sigma_se,
        "applied potential  phi_app/V_T": phi_app / V_T,
    }


def check_groups(groups, expected):
    assert set(expected) <= set(groups), sorted(set(expected) - set(groups))
    for key, value in expected.items():
        assert math.isclose(groups[key], value, rel_tol=1e-12), (key, groups[key], value)


def test_scaling_groups_table1_defaults():
    """Table 1 defaults, l0 = 1 um, t0 = 1/L_eta = 1/0.6 s:
    L W t0 = 1e-8 * 3.6e6 / 0.6 = 0.06; kappa0/(W l0^2) = 1.8e-10 / 3.6e-6 = 5e-5;
    L_eta t0 = 1; E_SE/W = 5e10/3.6e6 = 13888.9; D_SE t0/l0^2 = 1.5e-14/0.6/1e-12 = 0.025;
    D_DE: 2.5e-4; charge source n F c_m l0^2/(sigma V_T t0) = 96485.33 * 9.71e4 * 1e-12
    / (0.1 * 0.0256926 * 1.66667) = 2.1879; c_m/c0 = 9.71; contrast 2500/0.1 = 25000;
    phi_app/V_T = -0.45/0.0256926 = -17.515.

    Catches: t0 = L_eta instead of 1/L_eta (L W t0 = 0.0216), l0 not squared, V_T = F/RT,
    n or c_m missing from the charge source, t0 multiplied instead of divided there.
    """
    # Table 1's own D (independent transport): the hand values below are Table 1's.
    s = Scaling(parse_config({"materials": {"transport": "independent"}}))
    expected = hand_groups(l0=1e-6, t0=1 / 0.6)
    # The numbers in the docstring, to 4-5 digits: the hand formulas themselves are right.
    for key, approx in (
        ("allen_cahn_mobility  L W t0", 0.06),
        ("gradient  kappa0/(W l0^2)", 5e-5),
        ("reaction  L_eta t0", 1.0),
        ("diffusion grain  D t0/l0^2", 0.025),
        ("deposition charge  n F c_m l0^2/(sigma V_T t0)", 2.1879),
        ("conductivity contrast  sigma_metal/sigma_grain (solver)", 25000.0),
        ("applied potential  phi_app/V_T", -17.515),
    ):
        assert abs(expected[key] / approx - 1) < 1e-4, (key, expected[key])
    assert math.isclose(s.time, 1 / 0.6, rel_tol=1e-14)
    assert math.isclose(s.potential, R * 298.15 / F, rel_tol=1e-14)
    check_groups(s.groups(), expected)


@pytest.mark.parametrize("transport", ["independent", "nernst-einstein"])
def test_scaling_groups_other_scales(transport):
    """l0 = 2 um, t0 = 1 ms given explicitly, n = 2, sigma_GB = 25 S/m, L_eta = 3 /s:
    L W t0 = 3.6e-5, kappa0/(W l0^2) = 1.25e-5, L_eta t0 = 3e-3, D_SE t0/l0^2 = 3.75e-6,
    charge source 2 F c_m (4e-12) / (0.1 V_T 1e-3) = 2.1879 * 2 * 4 * (1.6667/1e-3) = 2.9172e4,
    contrast min(1e7, 1e4 * 25) / 0.1 = 2.5e6. With Nernst-Einstein, D_SE = sigma_SE R T /
    (n^2 F^2 c0) (n = 2: a quarter of 2.6628e-12) and D_GB from sigma_GB = 25 S/m.
    Catches: t0 taken as 1/L_eta although given, n missing (factor 2), the cap using sigma_SE
    only, l0 used unsquared."""
    data = {
        "scales": {"length": 2e-6, "time": 1e-3},
        "phase_field": {"electrons": 2, "reaction_rate": 3.0},
        "materials": {"transport": transport, "grain_boundary": {"conductivity": 25.0}},
    }
    s = Scaling(parse_config(data))
    if transport == "independent":
        d_se = d_gb = 1.5e-14
    else:
        d_se = 0.1 * R * 298.15 / (4 * F**2 * 1e4)
        d_gb = 25.0 * R * 298.15 / (4 * F**2 * 1e4)
    expected = hand_groups(l0=2e-6, t0=1e-3, n=2, L_eta=3.0, sigma_gb=25.0, D_se=d_se, D_gb=d_gb)
    assert abs(expected["deposition charge  n F c_m l0^2/(sigma V_T t0)"] / 2.9172e4 - 1) < 1e-4
    assert math.isclose(expected["conductivity contrast  sigma_metal/sigma_grain (solver)"], 2.5e6)
    check_groups(s.groups(), expected)
    # Scaled diffusivities and conductivities as the solver gets them.
    Dn = s.diffusivity()
    assert math.isclose(Dn.grain, d_se * 1e-3 / 4e-12, rel_tol=1e-12)
    assert math.isclose(Dn.grain_boundary, d_gb * 1e-3 / 4e-12, rel_tol=1e-12)
    sig = s.conductivities()
    assert math.isclose(sig.grain, 1.0) and math.isclose(sig.grain_boundary, 250.0)
    assert math.isclose(sig.metal, 2.5e6, rel_tol=1e-12)
