"""Studies: one config parameter swept over values on the same mesh and microstructure.

Every case is a full run (run.Simulation.run) in ``case-<k>-<value>/``. When there are more
ranks than cases need, the world communicator is split into groups that run cases side
by side. Afterwards rank 0 writes ``study.csv``, ``comparison.png`` (cases as columns,
fields as rows, shared colour limits per row) and ``probes.png`` from the cases' files,
and with an electrode protocol ``ccd.png`` (critical current density per case).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pyvista

from mpi4py import MPI

from .config import Config, check_parameter_path, config_value, with_value
from .config.protocol import electrode_segments
from .exit_codes import exit_code
from .io.figures import plot_comparison, plot_probes
from .io.output_fields import field_panels
from .io.protocol_figures import plot_ccd, plot_penetration
from .io.run_record import RUN_SUMMARY_KEYS
from .io.rundir import OutputError, prepare_directory, write_yaml
from .problem import Diagnostics
from .run import CHARGE_REACHED, Simulation, charge_unit

#: study.csv columns after the case and the parameter value
SUMMARY_COLUMNS = [k for k in RUN_SUMMARY_KEYS if k not in ("reason", "restarts")] + Diagnostics.names("summary")


def case_configs(cfg: Config) -> list[tuple[str, str, Config]]:
    """(directory name, label, config) per study value; labels keep the user's spelling."""
    study = cfg.study
    try:
        check_parameter_path(cfg, study.parameter)
    except ValueError as err:
        raise OutputError(str(err)) from None
    cases = []
    for k, value in enumerate(study.values):
        label = str(value)  # the figure title names the parameter
        slug = re.sub(r"[^A-Za-z0-9.+-]+", "", str(value).replace(" ", "")) or str(k)
        case_cfg = with_value(cfg, study.parameter, value)
        case_cfg = case_cfg.model_copy(update={"name": f"{cfg.name}-case-{k}"})
        cases.append((f"case-{k}-{slug}", label, case_cfg))
    return cases


def groups_for(comm_size: int, n_cases: int, ranks_per_case: int | None) -> int:
    """Number of side-by-side groups: all ranks on each case unless ranks outnumber cases."""
    if ranks_per_case is None:
        ranks_per_case = max(1, comm_size // n_cases)
    return max(1, min(n_cases, comm_size // ranks_per_case))


def run_study(cfg: Config, outdir: Path, overwrite=False, restart=False) -> int:
    world = MPI.COMM_WORLD
    cases = case_configs(cfg)  # validates every case before anything is written
    prepare_directory(outdir, world, overwrite, restart)
    write_yaml(outdir / "config.resolved.yaml", cfg.model_dump(mode="json"), world)

    n_groups = groups_for(world.size, len(cases), cfg.study.ranks_per_case)
    group = world.rank * n_groups // world.size
    comm = world.Split(group, world.rank)
    if world.rank == 0:
        print(
            f"study {cfg.study.parameter}: {len(cases)} cases on {n_groups} group(s) of "
            f"~{world.size // n_groups} rank(s)",
            flush=True,
        )
    statuses = {}
    for k, (dirname, _, case_cfg) in enumerate(cases):
        if k % n_groups != group:
            continue
        summary = Simulation(case_cfg, comm).run(outdir / dirname, overwrite=overwrite, restart=restart)
        statuses[dirname] = summary["status"]
    comm.Free()
    world.barrier()
    all_statuses = {}
    for part in world.allgather(statuses):
        all_statuses.update(part)

    if world.rank == 0:
        bases = write_study_table(outdir, cfg, cases)
        unequal = [dirname for (dirname, _, _), basis in zip(cases, bases) if basis == "charge not reached"]
        if unequal:
            print(
                f"warning: {', '.join(unequal)} stopped before time.stop_at_charge; study.csv marks "
                "them 'charge not reached' (not comparable at equal charge)",
                flush=True,
            )
        write_study_figures(outdir, cfg, cases)
        ccd = ""
        if cfg.protocol is not None:
            write_ccd_figure(outdir, cfg, cases)
            ccd = ", ccd.png"
        print(f"study written to {outdir}: study.csv, comparison.png, penetration.png, probes.png{ccd}", flush=True)
    return exit_code(all_statuses.values())


def comparison_basis(cfg: Config, summary: dict) -> str:
    """How a case's final values compare with the others': "equal charge" when it stopped
    at the study's time.stop_at_charge, "equal time" without one, else why it did not."""
    if cfg.time.stop_at_charge is None:
        return "equal time"
    if summary.get("reason") == CHARGE_REACHED:
        return "equal charge"
    return "charge not reached"


def write_study_table(outdir: Path, cfg: Config, cases) -> list[str]:
    """study.csv; returns each case's comparison basis (a column of the table)."""
    bases = []
    with open(outdir / "study.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", cfg.study.parameter, "comparison"] + SUMMARY_COLUMNS)
        for (dirname, _, _), value in zip(cases, cfg.study.values):
            path = outdir / dirname / "summary.json"
            summary = json.loads(path.read_text()) if path.exists() else {"status": "missing"}
            bases.append(comparison_basis(cfg, summary))
            writer.writerow([dirname, value, bases[-1]] + [summary.get(c, "") for c in SUMMARY_COLUMNS])
    return bases


def write_ccd_figure(outdir: Path, cfg: Config, cases) -> Path:
    """ccd.png: each case's critical current density against the studied value (SI, as
    the case ran it; categories are placed in order)."""
    values, ccd, ceilings = [], [], []
    for dirname, _, case_cfg in cases:
        values.append(config_value(case_cfg, cfg.study.parameter))
        ceilings.append(max(abs(s.signed_current_density or 0.0) for s in electrode_segments(case_cfg)))
        path = outdir / dirname / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {}
        ccd.append(summary.get("critical_current_density_A_m2"))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return plot_ccd(
        values if numeric else list(range(len(values))),
        ccd,
        cfg.study.parameter + (" (SI units)" if numeric else ""),
        outdir / "ccd.png",
        title=cfg.name,
        labels=None if numeric else [str(v) for v in cfg.study.values],
        ceilings=ceilings,
    )


def write_study_figures(outdir: Path, cfg: Config, cases) -> None:
    grids, labels = [], []
    for dirname, label, _ in cases:
        path = outdir / dirname / "final_state.vtu"
        if path.exists():
            grids.append(pyvista.read(path))
            labels.append(label)
    if grids:
        plot_comparison(
            grids,
            labels,
            field_panels(grids),
            outdir / "comparison.png",
            title=f"{cfg.name}: {cfg.study.parameter}, {_basis_label(cfg)}",
            contour="eta",
        )

    series = {label: outdir / d / "timeseries.csv" for d, label, _ in cases if (outdir / d / "timeseries.csv").exists()}
    if series:
        plot_penetration(
            series,
            outdir / "penetration.png",
            title=f"{cfg.name}: {cfg.study.parameter}",
            unit=charge_unit(cfg.domain.dim),
        )

    probe_names = [p.name for p in cfg.output.probes]
    figures = (
        ("current_density_magnitude", "|i| (A/m²)", "probes"),
        ("phi_V", "φ (V)", "probes_phi"),
        ("phi_i_V", "φ_i (V)", "probes_phi_i"),
        ("phi_e_V", "φ_e (V)", "probes_phi_e"),
    )
    for quantity, label, stem in figures:
        series = {}
        for dirname, case_label, _ in cases:
            path = outdir / dirname / "probes.csv"
            if not path.exists():
                continue
            data = np.genfromtxt(path, delimiter=",", names=True)
            if data.size == 0:
                continue
            data = np.atleast_1d(data)
            per_probe = {}
            for name in probe_names:
                column = f"{name}_{quantity}"
                if column in data.dtype.names:
                    per_probe[name] = (data["t"], data[column])
            if per_probe:
                series[case_label] = per_probe
        if series:
            plot_probes(
                series,
                label,
                outdir / f"{stem}.png",
                time_label="t (ms)",
                time_scale=1e3,
                title=f"{cfg.name}: {cfg.study.parameter}",
            )


def _basis_label(cfg: Config) -> str:
    """What the comparison figure's columns share: the charge passed, or (without a
    stopping charge) the time."""
    charge = cfg.time.stop_at_charge
    if charge is None:
        return f"at equal time t = {cfg.time.t_end:.3g} s"
    unit = charge_unit(cfg.domain.dim)
    return f"at equal charge Q = {charge:.3g} {unit}"
