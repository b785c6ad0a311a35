"""summary.json is strict JSON: a measure undefined for a state (NaN, e.g. a GB measure
without GBs) is null, numpy scalars are plain numbers. Catches json.dumps' default, which
writes the bare NaN token that strict readers (jq, JavaScript, pandas' json mode) reject."""

import json

import numpy as np

from mpi4py import MPI

from nzsp_fem.io.rundir import write_json


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"non-JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_nan_is_null_and_numbers_stay(tmp_path):
    path = tmp_path / f"summary-{MPI.COMM_WORLD.rank}.json"
    data = {
        "gb_penetration_m": float("nan"),
        "nested": [np.float64(np.nan), np.float64(2.5), np.int64(3)],
        "branch_count": np.int64(2),
        "t_final": 0.1,
        "status": "completed",
        "short_circuit": False,
        "reason": None,
    }
    write_json(path, data, MPI.COMM_SELF)
    back = _strict(path.read_text())
    assert back == {
        "gb_penetration_m": None,
        "nested": [None, 2.5, 3],
        "branch_count": 2,
        "t_final": 0.1,
        "status": "completed",
        "short_circuit": False,
        "reason": None,
    }
