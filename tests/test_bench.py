"""Smoke test of the benchmark (benchmarks/, run as ``python3 -m benchmarks.bench``): the
smallest quick case runs in-process and returns a complete result, and the reports can be
written from it. No timing assertions: timings depend on the machine."""

from __future__ import annotations

import pytest

from benchmarks import cases, measure, report

pytestmark = pytest.mark.serial


def test_smallest_quick_case_runs(tmp_path):
    # Mesh cache (and any other scratch) in tmp_path: the test writes nothing into the repository.
    case = cases.plan(quick=True, steps=cases.STEPS, dt=cases.DT, scratch=tmp_path)[0]
    assert case["ranks"] == 1 and case["h_factor"] == min(cases.QUICK_FACTORS)
    assert case["mesh_cache"].startswith(str(tmp_path))
    result = measure.run_case(case)
    for key in measure.RESULT_KEYS:
        assert key in result, key
    assert result["dofs"] > 0
    assert result["poisson"]["dofs"] > 0
    assert result["steps_done"] == case["steps"]
    # The timed SNES callbacks were called (the instrumentation is wired to the solver).
    assert result["residual_calls_per_step"] > 0 and result["jacobian_calls_per_step"] > 0
    assert result["return_map_s"] is not None

    info = {
        "cpu": "test",
        "cores": 1,
        "cores_usable": 1,
        "mem_mb": None,
        "loadavg": [0.0] * 3,
        "loadavg_end": [0.0] * 3,
        "total_s": 1.0,
        "date": "-",
        "commit": "-",
    }
    md, csv = report.write_reports(
        tmp_path, [result], info, quick=True, steps=case["steps"], dt=case["dt"], scratch=tmp_path
    )
    assert result["id"] in md.read_text() and result["id"] in csv.read_text()


def test_variants_are_a_preset_plus_petsc_options():
    """Variants only add PETSc options: the field split stays the preset's, set by CoupledSolver
    from nzsp_fem.solver.presets.field_splits (the benchmark builds none of its own)."""
    for name, v in cases.VARIANTS.items():
        cfg = cases.case_config({"preset": "direct", "h_factor": 1.0, "variant": name})
        assert cfg.solver.preset == v["preset"]
        for key, value in v["options"].items():
            assert cfg.solver.petsc_options[key] == value


def test_tagged_demo3d_row_differs_only_in_gb_representation(tmp_path):
    """The demo3d-tagged config case is configs/demo3d.yaml with tagged GB slabs, nothing else."""
    smooth, tagged = (
        cases.case_config({"config": name, "preset": "iterative", "mesh_cache": str(tmp_path)})
        for name in ("demo3d", "demo3d-tagged")
    )
    assert (smooth.microstructure.gb_representation, tagged.microstructure.gb_representation) == ("smooth", "tagged")
    a, b = smooth.model_dump(), tagged.model_dump()
    a["microstructure"]["gb_representation"] = "tagged"
    assert a == b


def test_adaptive_probe_takes_production_steps(tmp_path):
    """The adaptive probe continues the case through Simulation.step(): the production step
    rule, so every attempt carries the error estimate that rule judges it by (after two
    fixed steps the predictor that gives it has its history)."""
    case = cases.plan(quick=True, steps=2, dt=cases.DT, scratch=tmp_path)[0]
    case.update(poisson=False, return_map=False, adaptive_probe={"max_attempts": 2, "max_wall_s": 600})
    probe = measure.run_case(case)["adaptive_probe"]
    assert probe["accepted"] >= 1 and probe["t_end"] > probe["t_start"] == pytest.approx(2 * cases.DT)
    assert all(a["error_estimate"] is not None for a in probe["attempts"] if a["converged"])


def test_case_selection(tmp_path):
    """--cases keeps exactly the planned cases whose ids match a pattern, in plan order."""
    from benchmarks import bench

    planned = cases.plan(quick=False, steps=cases.STEPS, dt=cases.DT, scratch=tmp_path)
    planned += cases.config_plan(["demo3d-tagged"], tmp_path)
    chosen = bench.select(planned, "iterative-h5.72-*,demo3d-tagged-iterative-*")
    assert [c["id"] for c in chosen] == [
        "iterative-h5.72-np1",
        "iterative-h5.72-np2",
        "demo3d-tagged-iterative-np1",
        "demo3d-tagged-iterative-np2",
    ]
    assert bench.select(planned, "nothing-*") == []
