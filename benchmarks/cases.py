"""What the benchmark runs: the frozen case, the mesh sizes, the candidate-fix variants and
the plan of a run (one dict per case, JSON-serialisable: it is handed to a worker process
on its command line).

The case is the 2D polycrystal of configs/demo.yaml as of commit 540e097 (4 random grains,
two nuclei on the electrode plus a Na layer, potentiostatic -0.45 V, mechanics + J2
plasticity), copied here so that later edits of the demo do not change the benchmark. The
mesh sizes (grain, GB, nucleus) are divided by ``h_factor``; after ``initialize()`` every
case takes the same fixed number of steps with the same fixed dt, so all sizes do the same
physical work.

Scratch output (per-case JSON, logs, ``-log_view`` text, the mesh cache, the collected
``all.json`` and the ``--quick`` reports) goes under ``results/bench/`` (gitignored; removed
by ``make clean-results``), or wherever ``--scratch-dir`` / ``NZSP_BENCH_DIR`` points.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nzsp_fem.config import parse_config

REPO = Path(__file__).resolve().parents[1]
# NZSP_* variables pass into bin/nzsp-env's runtime, so the override also reaches workers.
SCRATCH = Path(os.environ.get("NZSP_BENCH_DIR") or REPO / "results" / "bench")

# configs/demo.yaml as of commit 540e097 (mesh sizes are scaled per case). The demo has since
# moved to explicit seeds and nuclei at y = 0.4/0.15 um; the benchmark keeps this frozen copy.
BASE_CASE = {
    "name": "bench",
    "domain": {"dim": 2, "size": ["1.2 um", "0.8 um"]},
    "microstructure": {"grains": 4, "rng_seed": 3, "gb_width": "30 nm"},
    "nuclei": {"radius": "60 nm", "positions": [["0 um", "0.25 um"], ["0 um", "0.6 um"]], "electrode_layer": "40 nm"},
    "materials": {"transport": "nernst-einstein"},
    "phase_field": {"gradient_coefficient": "7.2e-10 J/m"},
    "electrochemistry": {"electrode": {"mode": "potentiostatic", "potential": "-0.45 V"}},
    "mechanics": {"enabled": True, "plasticity": True},
    "time": {"t_end": "2 ms", "dt_initial": "1 us", "dt_max": "100 us", "n_outputs": 4},
}
BASE_MESH_M = {"size_grain": 60e-9, "size_gb": 15e-9, "size_nucleus": 12e-9}

DT = 1e-5  # s, fixed step of every case
STEPS = 3  # fixed number of steps of every case (3 keeps the full run near 15 min)
# h_factor -> DOFs (measured): 1.0 -> 9.2k, 2.35 -> 39k, 4.7 -> 139k; DOFs ~ h_factor^1.83.
# Direct preset: the demo mesh (1.0) and ~25k, 50k, 100k, 200k DOFs; 2 ranks at the largest.
FULL_FACTORS = [1.0, 1.84, 2.68, 3.92, 5.72]
# Iterative preset: 50k to 800k DOFs (the scaling target's range); 2 ranks at 200k.
FULL_ITERATIVE_FACTORS = [2.68, 5.72, 11.4]
FULL_ITERATIVE_PARALLEL = 5.72
QUICK_FACTORS = [0.75, 1.0, 1.45]  # ~6k, 9k, 17k DOFs
# Candidate fixes, measured (not applied) on one size or all sizes: each is its preset with
# ``options`` added to the PETSc options. The field split of the iterative preset is never
# built here: CoupledSolver sets it from nzsp_fem.solver.presets.field_splits (one block per
# field of the field table, each with the table's block preconditioner).
VARIANT_FACTOR = 2.68
VARIANTS = {
    "additive": {
        "preset": "iterative",
        "options": {"pc_fieldsplit_type": "additive"},
        "all_sizes": False,
        "text": "blocks applied side by side (block Jacobi) instead of one Gauss-Seidel sweep",
    },
    "ew": {
        "preset": "iterative",
        "options": {"snes_ksp_ew": None},
        "all_sizes": False,
        "text": "Eisenstat-Walker linear tolerances (-snes_ksp_ew)",
    },
    "lag_pc": {
        "preset": "direct",
        "options": {"snes_lag_preconditioner": 2},
        "all_sizes": False,
        "text": "re-factorise every 2nd Newton iteration (-snes_lag_preconditioner 2)",
    },
}
# After the timed steps, the smallest direct case continues with the adaptive controller
# (paper defaults of config.TimeStepping, from the benchmark's dt) for a while: how fast
# does dt grow, how many attempts are rejected? Feeds the paper-case estimate.
ADAPTIVE_PROBE = {"max_attempts": 100, "max_wall_s": 180.0}
QUICK_ADAPTIVE_PROBE = {"max_attempts": 30, "max_wall_s": 30.0}


def shown_path(path) -> str:
    """``path`` relative to the repository when it is inside it (for logs and reports)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# Whole configurations of the repository, measured as they are (their own mesh), per preset
# and rank count, for a few fixed steps from the start: the cost of one Newton iteration
# against the Poisson baseline on the same mesh, at the paper case's and the 3D demo's size.
CONFIG_CASES = {
    "paper": "configs/paper/microstructure.yaml",
    "demo3d": "configs/demo3d.yaml",
    "demo3d-tagged": "configs/demo3d.yaml",
}
# Keys changed on top of a config case's file: the 3D demo with tagged GB slabs (as the
# file has them) next to smooth GBs, so the two rows differ only in the GB representation.
CONFIG_OVERRIDES: dict[str, dict] = {
    "demo3d": {"microstructure.gb_representation": "smooth"},
    "demo3d-tagged": {"microstructure.gb_representation": "tagged"},
}
CONFIG_STEPS = 2
CONFIG_DT = 2e-6  # s: inside the reaction ramp, where every config converges from t = 0


def config_plan(names, scratch: Path | str | None = None) -> list[dict]:
    """Both presets on 1 and 2 ranks for each named config of CONFIG_CASES."""
    scratch = Path(scratch) if scratch is not None else SCRATCH
    cases = []
    for name in names:
        if name not in CONFIG_CASES:
            raise ValueError(f"unknown config case {name!r}; known: {', '.join(CONFIG_CASES)}")
        for preset in ("direct", "iterative"):
            for ranks in (1, 2):
                c = _case(preset, 0.0, ranks, CONFIG_STEPS, CONFIG_DT, config=name, return_map=False)
                c["id"] = f"{name}-{preset}-np{ranks}"
                c["mesh_cache"] = str(scratch / "meshes")
                cases.append(c)
    return cases


def case_config(case: dict):
    """The Config of a case: BASE_CASE with mesh sizes / h_factor and the solver preset; a
    candidate-fix variant is its preset with the variant's PETSc options on top; a config
    case is that repository config with the preset."""
    if case.get("config"):
        from nzsp_fem.config import load_config, with_value

        cfg = load_config(REPO / CONFIG_CASES[case["config"]])
        cfg = with_value(cfg, "mesh.cache_dir", str(case.get("mesh_cache", SCRATCH / "meshes")))
        for key, value in CONFIG_OVERRIDES.get(case["config"], {}).items():
            cfg = with_value(cfg, key, value)
        return with_value(cfg, "solver.preset", case["preset"])
    data = json.loads(json.dumps(BASE_CASE))
    f = float(case["h_factor"])
    data["mesh"] = {k: v / f for k, v in BASE_MESH_M.items()}
    data["mesh"]["cache_dir"] = str(case.get("mesh_cache", SCRATCH / "meshes"))
    data["solver"] = {"preset": case["preset"]}
    data["solver"].update(case.get("solver", {}))
    variant = case.get("variant")
    if variant:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
        v = VARIANTS[variant]
        data["solver"]["preset"] = v["preset"]
        data["solver"]["petsc_options"] = {**data["solver"].get("petsc_options", {}), **v["options"]}
    if "plasticity" in case:
        data["mechanics"]["plasticity"] = bool(case["plasticity"])
    return parse_config(data)


def _case(preset, h, ranks, steps, dt, **extra) -> dict:
    c = {"id": f"{preset}-h{h:g}-np{ranks}", "preset": preset, "h_factor": h, "ranks": ranks, "steps": steps, "dt": dt}
    c.update(extra)
    return c


def plan(
    quick: bool,
    steps: int,
    dt: float,
    factors=None,
    iterative_factors=None,
    variants: bool | None = None,
    scratch: Path | str | None = None,
) -> list[dict]:
    """Cases of a run: every size for both presets on 1 rank, the largest on 2 ranks (the
    iterative preset: FULL_ITERATIVE_PARALLEL in a full run), the adaptive probe on the demo
    mesh (h_factor 1) or the smallest, and (full run) the candidate fixes of VARIANTS.
    Mesh cache and ``-log_view`` files go under ``scratch`` (default SCRATCH)."""
    scratch = Path(scratch) if scratch is not None else SCRATCH
    factors = sorted(factors or (QUICK_FACTORS if quick else FULL_FACTORS))
    default_it = factors if (quick or factors != FULL_FACTORS) else FULL_ITERATIVE_FACTORS
    it_factors = sorted(iterative_factors or default_it)
    probe_h = 1.0 if 1.0 in factors else factors[0]
    cases = []
    for h in factors:
        extra = {"adaptive_probe": QUICK_ADAPTIVE_PROBE if quick else ADAPTIVE_PROBE} if h == probe_h else {}
        cases.append(_case("direct", h, 1, steps, dt, **extra))
    for h in it_factors:
        cases.append(_case("iterative", h, 1, steps, dt))
    cases.append(_case("direct", max(factors), 2, steps, dt))
    it_par = FULL_ITERATIVE_PARALLEL if (not quick and FULL_ITERATIVE_PARALLEL in it_factors) else max(it_factors)
    cases.append(_case("iterative", it_par, 2, steps, dt))
    if variants if variants is not None else not quick:
        for name, v in VARIANTS.items():
            fs = factors if v["preset"] == "direct" else it_factors
            mid = VARIANT_FACTOR if VARIANT_FACTOR in fs else fs[len(fs) // 2]
            runs = [(h, 1) for h in (fs if v["all_sizes"] else [mid])]
            if v.get("two_ranks"):
                runs.append((it_par if v["preset"] == "iterative" else max(factors), 2))
            for h, ranks in runs:
                c = _case(v["preset"], h, ranks, steps, dt, variant=name, return_map=False, poisson=False)
                c["id"] += "-" + name
                cases.append(c)
    for c in cases:
        c["mesh_cache"] = str(scratch / "meshes")
    # Profile the largest 1-rank case of each preset.
    for preset, fs in (("direct", factors), ("iterative", it_factors)):
        for c in cases:
            if c["preset"] == preset and c["ranks"] == 1 and c["h_factor"] == max(fs) and not c.get("variant"):
                c["profile"] = True
                c["log_view"] = str(scratch / "logs" / f"{c['id']}.log_view.txt")
    return cases
