"""Smoke test of the benchmark (nzsp_fem.bench): the smallest quick case runs in-process and
returns a complete result. No timing assertions: timings depend on the machine."""

from __future__ import annotations

import pytest

from nzsp_fem import bench

pytestmark = pytest.mark.serial


def test_smallest_quick_case_runs():
    case = bench.plan(quick=True, steps=bench.STEPS, dt=bench.DT)[0]
    assert case["ranks"] == 1 and case["h_factor"] == min(bench.QUICK_FACTORS)
    result = bench.run_case(case)
    for key in bench.RESULT_KEYS:
        assert key in result, key
    assert result["dofs"] > 0
    assert result["poisson"]["dofs"] > 0
    assert result["steps_done"] == case["steps"]
