"""Tables of docs/reproduction.md from finished studies: the run table and the measures
table, read from each study's study.csv (no DOLFINx needed).

    python3 -m benchmarks.reproduction results/paper/gb_conductivity results/paper/gb_youngs_modulus

prints Markdown to stdout; the claims table is written by hand from these numbers.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

RUN_COLUMNS = ["status", "reason", "t_final", "charge_passed_C", "steps", "newton_iterations", "wall_time_s"]
MEASURES = [
    ("gb_penetration_m", "GB depth (nm)", 1e9),
    ("planar_advance_m", "planar (nm)", 1e9),
    ("connected_penetration_m", "connected (nm)", 1e9),
    ("gb_metal_share", "GB share of new metal", 1.0),
    ("branch_count", "branches", 1.0),
    ("gb_phi_i_span_V", "phi_i span on GBs (V)", 1.0),
    ("max_interface_current_density_A_m2", "max interface i (A/m^2)", 1.0),
    ("isolated_metal_change", "isolated metal change", 1.0),
    ("max_von_mises_Pa", "max von Mises (MPa)", 1e-6),
]


def _number(text: str, scale: float = 1.0) -> str:
    if text in ("", "None", "nan"):
        return "-"
    try:
        value = float(text) * scale
    except ValueError:
        return text
    return f"{value:.4g}"


def tables(study_dirs: list[Path]) -> str:
    runs = ["| study | case | value | basis | " + " | ".join(RUN_COLUMNS) + " |"]
    runs.append("|" + "---|" * (4 + len(RUN_COLUMNS)))
    measures = ["| study | value | " + " | ".join(label for _, label, _ in MEASURES) + " |"]
    measures.append("|" + "---|" * (2 + len(MEASURES)))
    for study in study_dirs:
        with open(study / "study.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        parameter = [k for k in rows[0] if k not in ("case", "comparison")][0] if rows else ""
        for row in rows:
            value = row.get(parameter, "")
            runs.append(
                f"| {study.name} | {row['case']} | {value} | {row.get('comparison', '')} | "
                + " | ".join(
                    _number(row.get(c, "")) if c not in ("status", "reason") else row.get(c, "") for c in RUN_COLUMNS
                )
                + " |"
            )
            measures.append(
                f"| {study.name} | {value} | "
                + " | ".join(_number(row.get(name, ""), scale) for name, _, scale in MEASURES)
                + " |"
            )
    return "\n".join(runs) + "\n\n" + "\n".join(measures) + "\n"


if __name__ == "__main__":
    sys.stdout.write(tables([Path(p) for p in sys.argv[1:]]))
