"""Tables of docs/reproduction.md from finished studies: the run table and the measures
table, read from each study's study.csv (no DOLFINx needed).

    python3 -m benchmarks.reproduction results/paper/gb_conductivity results/paper/gb_youngs_modulus

prints Markdown to stdout; the claims table is written by hand from these numbers.

Cases run one by one (not as one study) are drawn side by side with

    python3 -m benchmarks.reproduction figures STEM "0.0125 S/m=runs/a" "25 S/m=runs/b" ...

which writes STEM_equal_charge.png (cases as columns, the standard field rows, as a
study's comparison.png) and STEM_penetration.png (GB depth and planar front against the
charge); this needs the runtime (pyvista).
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


def figures(stem: str, cases: list[str]) -> None:
    """The study figures of separately run cases ("label=run_dir"), at their common charge."""
    import json

    import pyvista

    from nzsp_fem.io.figures import plot_comparison
    from nzsp_fem.io.output_fields import field_panels
    from nzsp_fem.io.protocol_figures import plot_penetration

    labelled = [tuple(c.split("=", 1)) for c in cases]
    plot_penetration({label: Path(d) / "timeseries.csv" for label, d in labelled}, Path(f"{stem}_penetration.png"))
    # A case stopped before its end (no final state) is still on the penetration plot.
    labelled = [(label, d) for label, d in labelled if (Path(d) / "final_state.vtu").exists()]
    grids = [pyvista.read(Path(d) / "final_state.vtu") for _, d in labelled]
    charges = [json.loads((Path(d) / "summary.json").read_text())["charge_passed_C"] for _, d in labelled]
    # The charge stop lands each case on Q* to within one step's rounding.
    equal = max(charges) - min(charges) <= 1e-6 * max(charges)
    basis = f"at equal charge Q = {charges[0]:.3g} C/m" if equal else "at unequal charges (see the penetration plot)"
    plot_comparison(
        grids,
        [label for label, _ in labelled],
        field_panels(grids),
        Path(f"{stem}_equal_charge.png"),
        title=basis,
        contour="eta",
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["figures"]:
        figures(sys.argv[2], sys.argv[3:])
    else:
        sys.stdout.write(tables([Path(p) for p in sys.argv[1:]]))
