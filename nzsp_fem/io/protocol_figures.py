"""Figures of electrode protocols and studies (matplotlib, no display needed): the cell
voltage and the current density over time (figures/voltage.png, like Fig. 1a of the
paper), the critical current density of a study against its parameter (ccd.png), and a
study's GB penetration against the charge passed (penetration.png)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

#: 1 A/m^2 is 0.1 mA/cm^2, the unit of the paper's figures.
MA_CM2 = 10.0


def read_columns(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a CSV file as float arrays (empty cells and 'nan' give NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]

    def number(text: str) -> float:
        return float(text) if text else float("nan")

    return {n: np.array([number(r[header.index(n)]) for r in body], dtype=float) for n in names}


def time_weighted_range(values: np.ndarray, dt: np.ndarray, tail: float = 0.005) -> tuple[float, float] | None:
    """The range of ``values`` without its first and last ``tail`` fraction of time: what
    the curve shows for most of the run, without a start-up spike lasting microseconds."""
    ok = np.isfinite(values) & np.isfinite(dt)
    if not ok.any():
        return None
    order = np.argsort(values[ok])
    v, w = values[ok][order], dt[ok][order]
    cumulative = np.cumsum(w) / np.sum(w)
    lo = v[min(np.searchsorted(cumulative, tail), v.size - 1)]
    hi = v[min(np.searchsorted(cumulative, 1 - tail), v.size - 1)]
    return float(lo), float(hi)


def _time_unit(t_max: float) -> tuple[float, str]:
    for limit, scale, unit in ((7200.0, 3600.0, "h"), (120.0, 60.0, "min"), (1.0, 1.0, "s")):
        if t_max >= limit:
            return scale, unit
    return 1e-3, "ms"


def plot_voltage(timeseries: Path, path: Path, title: str | None = None, events: dict | None = None) -> Path:
    """Cell voltage (top) and current density (bottom: applied as steps, measured as dots)
    against time from a run's timeseries.csv. ``events``: {label: t} drawn as vertical
    lines (short circuit, voltage collapse)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = read_columns(
        Path(timeseries),
        ["t", "dt", "cell_voltage_V", "applied_current_density_A_m2", "electrode_current_density_A_m2"],
    )
    t = np.concatenate([[0.0], data["t"]])
    scale, unit = _time_unit(float(t[-1]) if t.size else 0.0)
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_v, ax_i = fig.subplots(2, 1, sharex=True)
    voltage = data["cell_voltage_V"]
    shown = time_weighted_range(voltage, data["dt"])
    millivolts = shown is not None and max(abs(shown[0]), abs(shown[1])) < 0.1
    v_scale = 1e3 if millivolts else 1.0
    # Backward Euler's value holds over the step that ends at t: a jump at a segment
    # boundary is drawn as a jump, not a ramp across the step.
    ax_v.plot(data["t"] / scale, voltage * v_scale, color="C0", lw=1.4, marker=".", ms=3, drawstyle="steps-pre")
    ax_v.axhline(0.0, color="0.6", lw=0.6)
    ax_v.set_ylabel("cell voltage (mV)" if millivolts else "cell voltage (V)")
    if shown is not None and (np.nanmin(voltage) < shown[0] or np.nanmax(voltage) > shown[1]):
        # Brief start-up or switching transients would flatten the protocol's steps.
        pad = 0.08 * (shown[1] - shown[0]) or 0.08 * max(abs(shown[0]), 1e-12)
        ax_v.set_ylim((shown[0] - pad) * v_scale, (shown[1] + pad) * v_scale)
        ax_v.text(0.01, 0.02, "brief transients clipped", transform=ax_v.transAxes, fontsize=7, color="0.4")
    applied = data["applied_current_density_A_m2"]
    if np.isfinite(applied).any():
        # Each row holds the current of the step that ended there: drawn "post" from the
        # step's start (the last value repeated to the end), it traces the protocol's steps.
        held = np.append(applied, applied[-1]) / MA_CM2
        ax_i.step(t / scale, held, where="post", color="C3", lw=1.4, label="applied")
    ax_i.plot(
        data["t"] / scale, data["electrode_current_density_A_m2"] / MA_CM2, ".", color="k", ms=3, label="measured"
    )
    ax_i.axhline(0.0, color="0.6", lw=0.6)
    ax_i.set_ylabel("current density (mA/cm²)")
    ax_i.set_xlabel(f"t ({unit})")
    ax_i.legend(frameon=False, fontsize=8, loc="best")
    for label, t_event in (events or {}).items():
        if t_event is None:
            continue
        for ax in (ax_v, ax_i):
            ax.axvline(t_event / scale, color="C1", ls="--", lw=1.0)
        ax_v.annotate(
            label,
            (t_event / scale, 1.0),
            xycoords=("data", "axes fraction"),
            color="C1",
            fontsize=8,
            ha="right",
            va="top",
            rotation=90,
        )
    for ax in (ax_v, ax_i):
        ax.grid(True, lw=0.4, alpha=0.5)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_ccd(
    values: Sequence[float],
    ccd: Sequence[float | None],
    parameter: str,
    path: Path,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    ceilings: Sequence[float] | None = None,
) -> Path:
    """Critical current density (mA/cm^2) against a study parameter. A case that did not
    fail (CCD null) is an open triangle at its protocol's largest current (``ceilings``,
    A/m^2): its CCD lies above. ``labels``: tick labels for categorical values."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(values, dtype=float)
    y = np.array([np.nan if c is None else c / MA_CM2 for c in ccd], dtype=float)
    fig = Figure(figsize=(5.6, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ok = np.isfinite(y)
    ax.plot(x[ok], y[ok], "o-", color="C0", lw=1.4, label="CCD")
    if (~ok).any():
        top = np.asarray(ceilings, dtype=float) / MA_CM2 if ceilings is not None else np.full(len(x), np.nan)
        ax.plot(x[~ok], top[~ok], "^", mfc="none", color="C3", ms=8, label="no failure (CCD above)")
    if labels is not None:
        ax.set_xticks(x, labels)
    elif x.size > 1 and np.all(x > 0) and x.max() / x.min() >= 100:
        ax.set_xscale("log")
    ax.set_xlabel(parameter)
    ax.set_ylabel("critical current density (mA/cm²)")
    ax.set_ylim(bottom=0)
    ax.grid(True, lw=0.4, alpha=0.5)
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_penetration(series: dict[str, Path], path: Path, title: str | None = None, unit: str = "C/m") -> Path:
    """gb_penetration_m and planar_advance_m (nm) against charge_passed_C, one colour per
    case (``series``: label -> timeseries.csv): cases compared at equal charge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for k, (label, csv_path) in enumerate(series.items()):
        data = read_columns(csv_path, ["charge_passed_C", "gb_penetration_m", "planar_advance_m"])
        q = data["charge_passed_C"]
        ax.plot(q, data["gb_penetration_m"] * 1e9, "-", color=f"C{k}", lw=1.4, label=f"{label}: GB")
        ax.plot(q, data["planar_advance_m"] * 1e9, "--", color=f"C{k}", lw=1.0, label=f"{label}: planar")
    ax.set_xlabel(f"charge passed ({unit})")
    ax.set_ylabel("position from the electrode (nm)")
    ax.grid(True, lw=0.4, alpha=0.5)
    ax.legend(frameon=False, fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(path, dpi=150, facecolor="white")
    return path
