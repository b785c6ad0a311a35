"""The benchmark's reports: ``performance.csv`` (one row per case) and ``performance.md``
(tables, growth, parallel efficiency, profile, targets, paper-case estimate), written from
the collected case results; no measurement happens here."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from pathlib import Path

from .analysis import analyse, fit_slope, paper_estimate, successful
from .cases import VARIANTS, shown_path
from .measure import EVENTS


def _f(x, fmt=".3g"):
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "-"
    return format(x, fmt)


def _pct(part, whole):
    return "-" if part is None or not whole else f"{100 * part / whole:.0f} %"


CSV_COLUMNS = [
    "id",
    "variant",
    "preset",
    "ranks",
    "h_factor",
    "dofs",
    "cells",
    "steps",
    "dt",
    "converged",
    "newton_per_step",
    "linear_per_newton",
    "step_wall_s",
    "step_cpu_s",
    "newton_wall_s",
    "newton_cpu_s",
    "assembly_s",
    "linear_s",
    "return_map_s",
    "commit_s",
    "other_s",
    "pcsetup_s",
    "residual_calls_per_step",
    "jacobian_calls_per_step",
    "maxrss_mb",
    "maxrss_sum_mb",
    "maxrss_base_mb",
    "bytes_per_dof",
    "incremental_bytes_per_dof",
    "poisson_dofs",
    "poisson_wall_s",
    "poisson_cpu_s",
    "poisson_iterations",
    "newton_over_poisson",
    "newton_over_poisson_cpu",
    "setup_s",
    "initialize_s",
    "failed",
]


def _row(r) -> dict:
    row = {k: r.get(k) for k in CSV_COLUMNS}
    p = r.get("poisson") or {}
    row.update(
        {
            "poisson_dofs": p.get("dofs"),
            "poisson_wall_s": p.get("wall_s"),
            "poisson_cpu_s": p.get("cpu_s"),
            "poisson_iterations": p.get("iterations"),
        }
    )
    ev = r.get("petsc_events") or {}
    steps = r.get("steps_done") or r.get("steps") or 1
    if "PCSetUp" in ev:
        row["pcsetup_s"] = ev["PCSetUp"]["time"] / steps
    t = r.get("timings") or {}
    row["setup_s"], row["initialize_s"] = t.get("setup_s"), t.get("initialize_s")
    return row


def write_csv(path: Path, results: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in results:
            row = _row(r)
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _events_table(r) -> list[str]:
    ev = r.get("petsc_events") or {}
    total = ev.get("SNESSolve", {}).get("time")
    steps = r.get("steps_done") or 1
    lines = [
        f"Case `{r['id']}` ({r['dofs']} DOFs, {r['ranks']} rank(s)), time-step stage only:",
        "",
        "| PETSc event | count | time (s, all steps) | per step (s) | share of SNESSolve |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in EVENTS:
        if name in ev and ev[name]["time"] > 0.005 * (total or 1):
            e = ev[name]
            lines.append(
                f"| {name} | {e['count']} | {e['time']:.3f} | {e['time'] / steps:.3f} | {_pct(e['time'], total)} |"
            )
    return lines


def dominant_summary(r) -> str:
    """One sentence on what dominates a case's step."""
    step = r["step_wall_s"]
    parts = {
        "linear solve (KSPSolve + PCSetUp)": r["linear_s"],
        "assembly (residual + Jacobian)": r["assembly_s"],
        "commit / other": (r.get("commit_s") or 0) + (r.get("other_s") or 0),
    }
    name, val = max(parts.items(), key=lambda kv: kv[1])
    ev = r.get("petsc_events") or {}
    extra = ""
    steps = r.get("steps_done") or 1
    if r["preset"] == "direct":
        if "PCSetUp" in ev:
            extra = f"; PCSetUp alone {_pct(ev['PCSetUp']['time'] / steps, step)}"
        if "MatLUFactorNum" in ev:
            extra += f" (MUMPS numeric LU factorisation {_pct(ev['MatLUFactorNum']['time'] / steps, step)})"
    else:
        if "KSPSolve" in ev:
            extra = (
                f"; KSPSolve {_pct(ev['KSPSolve']['time'] / steps, step)} ({r['linear_per_newton']:.0f} "
                "FGMRES iterations per Newton step)"
            )
        if "PCApply" in ev:
            extra += f", of which preconditioner applications {_pct(ev['PCApply']['time'] / steps, step)}"
        if "MatLUFactorNum" in ev:
            extra += f"; LU factorisations {_pct(ev['MatLUFactorNum']['time'] / steps, step)}"
    return f"`{r['id']}`: {name} is {_pct(val, step)} of the step{extra}."


def diagnosis(results) -> str:
    """Data-driven reading of the candidate fixes at the largest size they were run on (1 rank)."""
    ok = successful(results)
    var = [r for r in successful(results, variants=True) if r.get("variant") and r["ranks"] == 1]
    out = []
    for name in ("mech_bs", "mech_bs_mumps"):
        rows = [r for r in var if r["variant"] == name]
        if not rows:
            continue
        v = max(rows, key=lambda r: r["dofs"])
        base = next(
            (b for b in ok if b["preset"] == "iterative" and b["ranks"] == 1 and b["h_factor"] == v["h_factor"]), None
        )
        direct = next(
            (b for b in ok if b["preset"] == "direct" and b["ranks"] == 1 and b["h_factor"] == v["h_factor"]), None
        )
        if not base:
            continue
        if name == "mech_bs":
            out.append(
                f"Iterative preset: the Krylov iterations come from the displacement block. Its index set has "
                f"no block size, so BoomerAMG treats u_x and u_y as unrelated scalars; with block size "
                f"{'2'} (`mech_bs`) the FGMRES iterations per Newton step drop from "
                f"{base['linear_per_newton']:.0f} to {v['linear_per_newton']:.0f} at {v['dofs']} DOFs and the "
                f"step from {base['step_wall_s']:.1f} to {v['step_wall_s']:.1f} s."
            )
        else:
            ev = v.get("petsc_events") or {}
            lu = ev.get("MatLUFactorNum", {}).get("time", 0) / max(v.get("steps_done") or 1, 1)
            out.append(
                f"What is left is the LU of the eta/c/phi block (ASM with LU subdomains: on 1 rank one LU of "
                f"the whole block, by PETSc's own LU): using MUMPS for it (`mech_bs_mumps`) gives "
                f"{v['step_wall_s']:.1f} s per step ({base['step_wall_s'] / v['step_wall_s']:.1f}x faster than "
                f"the preset"
                + (f", {direct['step_wall_s'] / v['step_wall_s']:.1f}x faster than the direct preset" if direct else "")
                + f"), of which LU factorisation {lu:.1f} s."
            )
            if len(rows) >= 2:
                rows = sorted(rows, key=lambda r: r["dofs"])
                slope = fit_slope([r["dofs"] for r in rows], [r["step_wall_s"] for r in rows])
                out.append(f"That LU still sets the growth: time per step ~ DOFs^{slope:.2f} with this fix.")
    return " ".join(out)


def variant_growth_note(results) -> str:
    """'; with <variant>: worst excess x.xx' for the 1-rank iterative variants run at >= 2 sizes."""
    notes = []
    var = [r for r in successful(results, variants=True) if r.get("variant") and r["ranks"] == 1]
    for name in VARIANTS:
        rows = sorted((r for r in var if r["variant"] == name), key=lambda r: r["dofs"])
        if len(rows) >= 2 and VARIANTS[name]["preset"] == "iterative":
            worst = max((b["step_wall_s"] / a["step_wall_s"]) / (b["dofs"] / a["dofs"]) for a, b in zip(rows, rows[1:]))
            slope = fit_slope([r["dofs"] for r in rows], [r["step_wall_s"] for r in rows])
            notes.append(f"{name} {worst:.2f} (slope {slope:.2f})")
    return ("; with the candidate fixes (not applied), worst excess: " + ", ".join(notes)) if notes else ""


def write_markdown(path: Path, results: list[dict], info: dict, args_used: dict, fpt: dict) -> None:
    ok = sorted(successful(results), key=lambda r: (r["preset"], r["ranks"], r["dofs"]))
    a = analyse(results)
    L = []
    add = L.append
    add("# Performance of the coupled solver")
    add("")
    add(
        f"Generated by `make bench` (`python3 -m benchmarks.bench{' --quick' if args_used['quick'] else ''}`) "
        f"on {info['date']}, commit `{info['commit']}`. Raw numbers: "
        f"[`{args_used['csv_name']}`]({args_used['csv_name']}); every case's JSON and log in "
        f"`{shown_path(args_used['scratch'])}/` (scratch, not committed)."
    )
    add("")
    v = next((r.get("versions") for r in ok if r.get("versions")), {})
    add(
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
        f"{_f(info['mem_mb'], 'd') if info['mem_mb'] else '?'} MB RAM; DOLFINx {v.get('dolfinx', '?')}, "
        f"PETSc {v.get('petsc', '?')}, Python {v.get('python', '?')}. "
        f"Load average (1/5/15 min) at start {', '.join(f'{x:.1f}' for x in info['loadavg'])}, "
        f"at end {', '.join(f'{x:.1f}' for x in info['loadavg_end'])}; whole run {info['total_s'] / 60:.1f} min."
    )
    add("")
    ratios = sorted(r["step_wall_s"] / r["step_cpu_s"] for r in ok if r["ranks"] == 1 and r["step_cpu_s"] > 0)
    contention = ratios[len(ratios) // 2] if ratios else None
    if contention is not None and contention > 1.15:
        add(
            f"> **Shared machine, contended while this ran.** On 1 rank the wall time per step was a median "
            f"{contention:.1f}x the CPU time: other jobs took CPU from the benchmark, so wall times are inflated and "
            "noisy, and the 2-rank runs are hit hardest. The CPU-time columns are less affected. Re-run "
            "`make bench` on an idle machine before quoting absolute numbers."
        )
    else:
        add(
            f"> **Shared machine.** This ran on a 2-core machine shared with other jobs; during this run the cores "
            f"were not contended (1-rank wall time per step = {_f(contention, '.2f')}x CPU time, median), but "
            "absolute times vary from run to run (parallel efficiency 89-99 % in idle runs while this benchmark was "
            "developed), and much more when other jobs are active (a run under load average ~6 gave 2-3x longer "
            "wall times and 43 % parallel efficiency). Ratios (x Poisson, growth exponents) are the robust part."
        )
    add("")
    add("## Case")
    add("")
    add(
        f"The 2D polycrystal of `configs/demo.yaml` as of commit 540e097, frozen in `benchmarks/cases.py` "
        f"(1.2 x 0.8 um, 4 random grains (rng_seed 3), 30 nm GBs, two 60 nm nuclei on the electrode at y = 0.25 and "
        f"0.6 um plus a 40 nm Na layer, -0.45 V, mechanics + J2 plasticity), solved with the defaults of the "
        f"package at this commit (two potentials, supply-limited kinetics: eta, mu, c, phi_i, phi_e, u, all P1: "
        f"7 DOFs per vertex). Mesh sizes (grain/GB/nucleus 60/15/12 nm) are divided by `h_factor`. After `initialize()` every "
        f"case takes {args_used['steps']} steps of dt = {args_used['dt']:g} s from t = 0 (fixed; no adaptivity), so "
        "every size does the same physical work. Times are per accepted step unless marked per Newton iteration; "
        "wall times are the maximum over ranks."
    )
    add("")
    add(
        "Split of a step: **assembly** = SNES residual + Jacobian callbacks (DOLFINx assembly incl. the "
        "return-mapping arithmetic in the kernels); **linear** = the rest of SNESSolve (PETSc KSPSolve + PCSetUp); "
        "**return map** = (plastic - elastic) assembly time at the same state x the number of assemblies, plus "
        "`PlasticState.commit` (measured with a second CoupledProblem with plasticity off; it is *contained* in "
        "assembly, except the commit); **other** = the rest (commit, Python). **Poisson** = scalar P1 Poisson on "
        "the same mesh (u = 0 left/right, f = 1), CG + BoomerAMG to rtol 1e-8, assembly + AMG set-up + solve, best "
        "of 3; **x Poisson** = wall time of one coupled Newton iteration (step time / Newton iterations) over it."
    )
    add("")
    add("## Results")
    add("")
    add(
        "| case | preset | ranks | DOFs | Newton/step | lin. its/Newton | step wall (s) | step CPU (s) | "
        "Newton it. (s) | assembly | linear | return map | other | peak RSS/rank (MB) | bytes/DOF (incr.) | "
        "Poisson DOFs | Poisson (s) | x Poisson |"
    )
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in ok:
        p = r.get("poisson") or {}
        add(
            f"| `{r['id']}` | {r['preset']} | {r['ranks']} | {r['dofs']} | {r['newton_per_step']:.2f} | "
            f"{r['linear_per_newton']:.1f} | {r['step_wall_s']:.2f} | {r['step_cpu_s']:.2f} | "
            f"{r['newton_wall_s']:.3f} | {_pct(r['assembly_s'], r['step_wall_s'])} | "
            f"{_pct(r['linear_s'], r['step_wall_s'])} | {_pct(r.get('return_map_s'), r['step_wall_s'])} | "
            f"{_pct(r['other_s'] + r['commit_s'], r['step_wall_s'])} | {r['maxrss_mb']:.0f} | "
            f"{r['bytes_per_dof']:.0f} ({r['incremental_bytes_per_dof']:.0f}) | {p.get('dofs', '-')} | "
            f"{_f(p.get('wall_s'))} | {_f(r.get('newton_over_poisson'), '.1f')} |"
        )
    for r in results:
        if "failed" in r:
            add(
                f"| `{r['id']}` | {r['preset']} | {r['ranks']} | failed: {r['failed']} after "
                f"{r['process_wall_s']:.0f} s | | | | | | | | | | | | | | |"
            )
    add("")
    add(
        "Peak RSS is `getrusage` maxrss of each rank after the time steps (before the return-map and Poisson "
        "measurements); bytes/DOF = sum over ranks / DOFs, and in brackets the same without the RSS the process "
        f"had after importing DOLFINx (~{ok[0]['maxrss_base_mb']:.0f} MB per rank), which dominates the small cases."
        if ok
        else ""
    )
    add("")
    bad = [r for r in ok if not r["converged"]]
    if bad:
        add("**Not converged:** " + ", ".join(f"`{r['id']}`" for r in bad) + " (times cover the steps done).")
        add("")
    add("Measured split (seconds per step; return map is inside assembly except the commit):")
    add("")
    add(
        "| case | assembly (s) | of it return map (s) | linear (s) | PCSetUp (s) | F / J evaluations per step | "
        "setup (s) | initialize (s) |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in ok:
        row = _row(r)
        add(
            f"| `{r['id']}` | {r['assembly_s']:.3f} | {_f(r.get('return_map_s'))} | {r['linear_s']:.3f} | "
            f"{_f(row.get('pcsetup_s'))} | {r['residual_calls_per_step']:.1f} / {r['jacobian_calls_per_step']:.1f} | "
            f"{_f(row['setup_s'])} | {_f(row['initialize_s'])} |"
        )
    add("")

    var = [r for r in successful(results, variants=True) if r.get("variant")]
    if var:
        add("## Candidate fixes (measured here, not applied)")
        add("")
        add(
            "Same case and steps; the preset's options unchanged except as stated. Evidence for changes "
            "to `nzsp_fem/solver/presets.py` (`field_splits` / `solver_options`), which this benchmark does not "
            "modify."
        )
        add("")
        add(
            "| case | change | ranks | DOFs | Newton/step | lin. its/Newton | step wall (s) | step CPU (s) | "
            "CPU vs preset |"
        )
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for key in sorted({(VARIANTS[r["variant"]]["preset"], r["ranks"], r["h_factor"]) for r in var}):
            base = next((b for b in ok if (b["preset"], b["ranks"], b["h_factor"]) == key), None)
            if base:
                add(
                    f"| `{base['id']}` | none ({key[0]} preset) | {key[1]} | {base['dofs']} | "
                    f"{base['newton_per_step']:.2f} | {base['linear_per_newton']:.1f} | {base['step_wall_s']:.2f} | "
                    f"{base['step_cpu_s']:.2f} | 1.00 |"
                )
            for r in var:
                if (VARIANTS[r["variant"]]["preset"], r["ranks"], r["h_factor"]) != key:
                    continue
                add(
                    f"| `{r['id']}` | {r['variant']}: {VARIANTS[r['variant']]['text']} | {r['ranks']} | {r['dofs']} | "
                    f"{r['newton_per_step']:.2f} | {r['linear_per_newton']:.1f} | {r['step_wall_s']:.2f} | "
                    f"{r['step_cpu_s']:.2f} | "
                    f"{_f(r['step_cpu_s'] / base['step_cpu_s'], '.2f') if base else '-'} |"
                )
        add("")
        for name in VARIANTS:
            rows = sorted((r for r in var if r["variant"] == name and r["ranks"] == 1), key=lambda r: r["dofs"])
            if len(rows) >= 2:
                dofs = [r["dofs"] for r in rows]
                excess = [
                    (b["step_wall_s"] / a["step_wall_s"]) / (b["dofs"] / a["dofs"]) for a, b in zip(rows, rows[1:])
                ]
                excess_cpu = [
                    (b["step_cpu_s"] / a["step_cpu_s"]) / (b["dofs"] / a["dofs"]) for a, b in zip(rows, rows[1:])
                ]
                add(
                    f"Growth with `{name}`: time per step ~ DOFs^{_f(fit_slope(dofs, [r['step_wall_s'] for r in rows]), '.2f')} "
                    f"(CPU ^{_f(fit_slope(dofs, [r['step_cpu_s'] for r in rows]), '.2f')}); step-time ratio / DOF "
                    f"ratio per size step: {', '.join(f'{x:.2f}' for x in excess)} (CPU "
                    f"{', '.join(f'{x:.2f}' for x in excess_cpu)}); linear iterations per Newton step "
                    f"{' -> '.join(format(r['linear_per_newton'], '.1f') for r in rows)}."
                )
                add("")

    add("## Growth with size (1 rank)")
    add("")
    for preset, g in a["growth"].items():
        add(
            f"**{preset}**: time per step ~ DOFs^{_f(g['slope_step_wall'], '.2f')} (wall; CPU "
            f"^{_f(g['slope_step_cpu'], '.2f')}), time per Newton iteration ~ DOFs^{_f(g['slope_newton_wall'], '.2f')} "
            f"(least-squares fit over {len(g['dofs'])} sizes)."
        )
        add("")
        add("| DOFs | -> DOFs | DOF ratio | step-time ratio (wall) | excess = time ratio / DOF ratio (wall / CPU) |")
        add("|---:|---:|---:|---:|---:|")
        for pw in g["pairwise"]:
            add(
                f"| {pw['from']} | {pw['to']} | {pw['dof_ratio']:.2f} | {pw['time_ratio']:.2f} | "
                f"{pw['excess']:.2f} / {pw['excess_cpu']:.2f} |"
            )
        add("")

    add("## Parallel efficiency (same case, 1 vs 2 ranks)")
    add("")
    if a["parallel"]:
        add(
            "| preset | DOFs | step 1 rank (s) | step 2 ranks (s) | speed-up | efficiency (wall) | "
            "efficiency (per Newton it.) | CPU/step 1 / 2 ranks (s) | efficiency (CPU) | Newton/step 1 / 2 | "
            "lin. its/Newton 1 / 2 |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for preset, p in a["parallel"].items():
            add(
                f"| {preset} | {p['dofs']} | {p['t1']:.2f} | {p['t2']:.2f} | {p['speedup']:.2f} | "
                f"{100 * p['efficiency']:.0f} % | {100 * p['efficiency_newton']:.0f} % | {p['c1']:.2f} / {p['c2']:.2f} | "
                f"{100 * p['efficiency_cpu']:.0f} % | "
                f"{p['newton_1']:.2f} / {p['newton_2']:.2f} | {p['linear_1']:.1f} / {p['linear_2']:.1f} |"
            )
        add("")
        add(
            "Efficiency (wall) = T1 / (2 T2) with wall times; efficiency (CPU) uses each run's CPU time per step "
            "(max over ranks), which is what the wall time would be on otherwise idle cores (Open MPI polls while "
            "waiting, so waiting counts as CPU time and this is not flattering). With other jobs on the 2 cores "
            "the wall-time efficiency measures contention as much as the code. The iterative preset also changes "
            "its preconditioner with the rank count (ILU(0) of the eta block per rank; BoomerAMG coarsens differently)."
        )
    else:
        add("No 2-rank result.")
    add("")

    add("## Profile: what dominates")
    add("")
    for r in ok:
        if r["ranks"] == 1 and r["dofs"] == max(
            x["dofs"] for x in ok if x["preset"] == r["preset"] and x["ranks"] == 1
        ):
            add("- " + dominant_summary(r))
    for r in ok:
        if r["ranks"] == 2:
            add("- " + dominant_summary(r))
    add("")
    diag = diagnosis(results)
    if diag:
        add(diag)
        add("")
    for r in ok:
        if r.get("profile") or r.get("cprofile_top") is not None:
            L.extend(_events_table(r))
            add("")
            if r.get("cprofile_top"):
                lines = [ln for ln in r["cprofile_top"].splitlines() if ln.strip()]
                start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls")), 0)
                add("Python profile (cProfile, rank 0, top by own time) of the same steps:")
                add("")
                add("```")
                L.extend(lines[start : start + 9])
                add("```")
                add("")
            if r.get("log_view"):
                add(f"Full `-log_view`: `{shown_path(r['log_view'])}` (scratch, not committed).")
                add("")
    add(
        "py-spy is not in the runtime (docker/packages.txt), so the profile is PETSc's event log of the time-step "
        "stage plus cProfile; the Python side is a thin layer over the PETSc/DOLFINx C calls."
    )
    add("")

    # Targets.
    add("## Targets")
    add("")
    add("| target | measured | status |")
    add("|---|---|---|")
    ratios = [
        (r["id"], r.get("newton_over_poisson"), r.get("newton_over_poisson_cpu"))
        for r in ok
        if r.get("newton_over_poisson")
    ]
    if ratios:
        worst = max(ratios, key=lambda x: x[1])
        best = min(ratios, key=lambda x: x[1])
        met = worst[1] <= 10
        add(
            f"| one coupled Newton iteration <= 10x the Poisson baseline on the same mesh | "
            f"{best[1]:.0f}x (`{best[0]}`) to {worst[1]:.0f}x (`{worst[0]}`) wall; CPU "
            f"{min(x[2] for x in ratios if x[2]):.0f}x to {max(x[2] for x in ratios if x[2]):.0f}x | "
            f"{'met' if met else '**not met**'} |"
        )
    par = [(k, p) for k, p in a["parallel"].items()]
    nnz_note = next(
        (
            r
            for r in sorted(ok, key=lambda r: -r["dofs"])
            if r.get("jacobian_nnz") and (r.get("poisson") or {}).get("nnz")
        ),
        None,
    )
    for preset, p in par:
        big = p["dofs"] >= 200_000
        met = p["efficiency"] >= 0.8
        status = ("met" if met else "**not met**") if big else f"not tested (only {p['dofs']} DOFs < 200k)"
        add(
            f"| parallel efficiency >= 80 % from 1 to 2 ranks at >= 200k DOFs ({preset}) | "
            f"{100 * p['efficiency']:.0f} % wall at {p['dofs']} DOFs (CPU-time based: {100 * p['efficiency_cpu']:.0f} %) | "
            f"{status}{'; CPU-time based ' + ('>=' if p['efficiency_cpu'] >= 0.8 else '<') + ' 80 %' if big and not met else ''} |"
        )
    if not par:
        add("| parallel efficiency >= 80 % 1 -> 2 ranks at >= 200k DOFs | not measured | **not measured** |")
    g = a["growth"].get("iterative")
    if g:
        worst = max(pw["excess"] for pw in g["pairwise"])
        worst_cpu = max(pw["excess_cpu"] for pw in g["pairwise"])
        met = worst <= 1.2
        add(
            f"| iterative preset: time per step grows at most 1.2x faster than the DOFs | worst step-time "
            f"ratio / DOF ratio {worst:.2f} (CPU {worst_cpu:.2f}); slope {g['slope_step_wall']:.2f} "
            f"(per doubling 2^{g['slope_step_wall']:.2f}/2 = {2 ** g['slope_step_wall'] / 2:.2f}) | "
            f"{'met' if met else '**not met**'}{variant_growth_note(results)} |"
        )
    est = args_used.get("estimate")
    if est:
        met = est["minutes"] <= 15 and not est.get("stalled")
        stalled = est.get("stalled")
        pr = est.get("probe") or {}
        add(
            "| 2D paper case (>= 200k DOFs) to t = 0.05 s in <= 15 min on 2 ranks (**estimate**) | "
            + (
                f"the adaptive probe **stalled** at t = {pr.get('t_end', 0):.3g} s (dt cut to "
                f"{pr.get('dt_end', 0):.2g} s), so t = 0.05 s is not reached at present; had it not stalled: "
                if stalled
                else ""
            )
            + (f"(the adaptive probe covered only t <= {pr['t_end']:.2g} s) " if pr and not stalled else "")
            + f"~{est['minutes']:.0f} min ({est['steps']} attempts at {est['dofs']} DOFs; range "
            f"{est['minutes_low']:.0f}-{est['minutes_high']:.0f} min, see below) | "
            f"{('met (estimate)' if met else '**not met** (estimate)') if est['dofs'] >= 200_000 else 'not tested (no 2-rank case >= 200k DOFs)'} |"
        )
    add("")
    if nnz_note:
        p = nnz_note["poisson"]
        add(
            f"For scale (`{nnz_note['id']}`): the coupled Jacobian has {nnz_note['dofs'] / p['dofs']:.1f}x the "
            f"Poisson DOFs and {nnz_note['jacobian_nnz'] / p['nnz']:.0f}x its nonzeros "
            f"({nnz_note['jacobian_nnz']:.3g} vs {p['nnz']:.3g}), and a Newton iteration also assembles a Jacobian "
            "with the plastic return map at every quadrature point and factorises or preconditions a "
            "non-symmetric 5-field system."
        )
        add("")
    if est:
        add("### Paper-case estimate (not a measurement)")
        add("")
        add(
            f"Time per step from `{est['case']}` ({est['dofs']} DOFs, 2 ranks): {est['step_s']:.1f} s wall at "
            f"{est['newton']:.1f} Newton iterations per step ({est['newton_s']:.2f} s per Newton iteration). "
            f"Step count: the adaptive controller with the paper defaults (`config.TimeStepping`: dt_initial "
            f"{est['dt_initial']:g} s, x{est['growth']:g} after <= {est['easy']} Newton iterations, dt_max "
            f"{est['dt_max']:g} s, {est['n_outputs']} output times, t_end {est['t_end']:g} s) needs "
            f"{est['ideal_steps']} steps if every step is accepted at that Newton count (simulated with "
            "`StepController`)."
        )
        add("")
        pr = est.get("probe")
        if pr:
            acc = [x for x in pr["attempts"] if x["converged"]]
            add(
                f"Adaptive probe (measured on `{est['probe_case']}`, {pr['wall_s']:.0f} s): continuing from "
                f"t = {pr['t_start']:.3g} s, dt = {pr['dt_start']:g} s with that controller, {pr['accepted']} "
                f"steps were accepted and {pr['rejected']} rejected ({pr['newton_per_accepted']:.1f} Newton "
                f"iterations per accepted step, {pr['newton_per_attempt']:.1f} per attempt); t reached "
                f"{pr['t_end']:.3g} s with dt = {pr['dt_end']:.3g} s"
                + (f" (largest accepted dt {max(x['dt'] for x in acc):.3g} s)." if acc else ".")
            )
            if est.get("stalled"):
                add("")
                fails = [x for x in pr["attempts"] if not x["converged"]]
                add(
                    f"**The probe stalled**: after {len(fails)} rejected attempts (SNES reasons: "
                    + ", ".join(sorted({x["reason"] for x in fails}))
                    + f") dt fell to {pr['dt_end']:.2g} s near "
                    f"t = {pr['t_end']:.3g} s. That is a convergence failure of the solver, not a cost issue: until "
                    "it is fixed no mesh size reaches t = 0.05 s, whatever the time per step. The numbers below "
                    "assume it is fixed and dt grows again from the stall onset."
                )
            add("")
            where = (
                f"the stall onset (t = {est['stall_onset_t']:.3g} s, resuming with the last accepted dt)"
                if est.get("stall_onset_t") is not None
                else "the probe's end (t, dt)"
            )
            add(
                f"Estimate: {est['n_pre']} ideal steps to the probe's start + {est.get('probe_attempts_counted', 0)} probe "
                f"attempts (at their measured Newton counts) + {est['n_post']} ideal steps from {where} to t_end "
                f"= **{est['steps']} attempts, ~{est['minutes']:.0f} min** on 2 ranks. Range "
                f"{est['minutes_low']:.0f} min (CPU instead of wall time, as on an idle machine) to "
                f"{est['minutes_high']:.0f} min (every remaining step at the easy limit of {est['easy']} Newton "
                "iterations). If dt stops growing later (more rejections), the count grows accordingly."
                + (
                    ""
                    if not est.get("variants")
                    else " With the candidate fixes (not applied) at the same size on "
                    "2 ranks: "
                    + "; ".join(
                        f"`{v['id']}` {v['step_s']:.1f} s/step -> ~{v['minutes']:.0f} min" for v in est["variants"]
                    )
                    + "."
                )
            )
        else:
            add(
                f"Estimate: {est['steps']} steps x {est['step_s']:.1f} s = **~{est['minutes']:.0f} min** "
                f"(range {est['minutes_low']:.0f}-{est['minutes_high']:.0f} min: CPU time; every step at "
                f"{est['easy']} Newton iterations)."
            )
        add("")
        add(
            "The paper case has other parameters than the benchmark case (10 nm interface, independent D, "
            "2 x 1 um, 6 grains), so its Newton counts and step counts may differ; this is an estimate."
        )
        add("")

    add("## fenicsx-performance-tests")
    add("")
    add(fpt["text"])
    add("")
    add("## Reproduce")
    add("")
    add(
        "`make bench` (full run; writes this file and the CSV), `bin/nzsp-env python3 -m benchmarks.bench --quick` "
        "(smallest sizes, writes to `results/bench/quick/`), one case: `bin/nzsp-env mpirun -n 2 python3 -m "
        'benchmarks.bench --case \'{"preset": "direct", "h_factor": 1.0, "steps": 5, "dt": 1e-5}\' '
        "--out results/bench/one.json`. Options: `--steps`, `--dt`, `--factors`, `--iterative-factors`, "
        "`--no-variants`, `--timeout`, `--output-dir`, `--scratch-dir`. Scratch output (per-case JSON and logs, "
        "`-log_view` text, the mesh cache) goes to `results/bench/` (gitignored), or `--scratch-dir` / "
        "`NZSP_BENCH_DIR`."
    )
    add("")
    path.write_text("\n".join(L))


def fenicsx_performance_tests() -> dict:
    exe = shutil.which("dolfinx-scaling-test")
    policy = ""
    if shutil.which("apt-cache"):
        try:
            policy = subprocess.run(
                ["apt-cache", "policy", "fenicsx-performance-tests"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError):
            policy = ""
    installed = next((ln.split(":", 1)[1].strip() for ln in policy.splitlines() if "Installed:" in ln), None)
    candidate = next((ln.split(":", 1)[1].strip() for ln in policy.splitlines() if "Candidate:" in ln), None)
    if exe:
        text = (
            f"`dolfinx-scaling-test` is installed ({exe}); it was not run by this benchmark: the Poisson "
            "baseline above is the same solve in Python on the benchmark's own mesh."
        )
    elif candidate and candidate != "(none)":
        text = (
            f"Debian's `fenicsx-performance-tests` ({candidate}, the C++ `dolfinx-scaling-test` Poisson/elasticity "
            f"weak/strong scaling driver) is available from the runtime's apt sources but not installed "
            f"(installed: {installed or '(none)'}). It would fit: it only depends on libraries the runtime "
            "already has (libdolfinx-real0.9, libpetsc-real3.22, basix, boost-program-options). It is not in "
            "docker/packages.txt, so the benchmark does not use it; the Poisson baseline above is the same "
            "kind of solve (P1 Poisson, CG + BoomerAMG) on the benchmark's own mesh."
        )
    else:
        text = (
            "`fenicsx-performance-tests` is not installed and apt-cache does not list it here; the Poisson "
            "baseline above stands in for it."
        )
    return {"installed": bool(exe), "candidate": candidate, "text": text}


def write_reports(
    outdir: Path, results: list[dict], info: dict, quick: bool, steps: int, dt: float, scratch: Path
) -> tuple:
    """performance.csv and performance.md in ``outdir``; ``scratch`` is only named in the text."""
    csv_path, md_path = outdir / "performance.csv", outdir / "performance.md"
    write_csv(csv_path, results)
    frozen = [r for r in results if not r.get("config")]
    est = paper_estimate(frozen)
    write_markdown(
        md_path,
        frozen,
        info,
        {"quick": quick, "steps": steps, "dt": dt, "scratch": scratch, "csv_name": csv_path.name, "estimate": est},
        fenicsx_performance_tests(),
    )
    configs = [r for r in results if r.get("config")]
    with open(md_path, "a") as f:
        if configs:
            f.write(config_section(configs))
        # Whole runs and before/after numbers that a benchmark run does not produce (each
        # says how it was measured) are kept in the source tree and carried into the report.
        notes = Path(__file__).with_name("performance_notes.md")
        if notes.exists():
            f.write("\n" + notes.read_text())
    return md_path, csv_path


def config_section(results: list[dict]) -> str:
    """The repository's own configs measured as they are: Newton cost against Poisson on
    the same mesh, per preset and rank count, and 1 -> 2 rank efficiency."""
    from .cases import CONFIG_CASES, CONFIG_DT, CONFIG_OVERRIDES, CONFIG_STEPS

    def shown(name: str) -> str:
        over = "".join(f" + {k}: {v}" for k, v in CONFIG_OVERRIDES.get(name, {}).items())
        return f"`{CONFIG_CASES[name]}`{over}"

    lines = [
        "",
        "## The repository's configurations",
        "",
        f"Each config of `benchmarks/cases.py` CONFIG_CASES on its own mesh, {CONFIG_STEPS} steps of "
        f"{CONFIG_DT:g} s from t = 0 after `initialize()`, both presets on 1 and 2 ranks. **x Poisson** = one "
        "Newton iteration (assembly + linear solve) over the P1 Poisson baseline on the same mesh; target <= 10. "
        "**efficiency** = (1-rank Newton time) / (2 x 2-rank Newton time); target >= 80 %.",
        "",
        "| case | config | preset | ranks | DOFs | Newton/step | lin. its/Newton | Newton it. (s) | assembly | "
        "linear | Poisson (s) | x Poisson | efficiency |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["config"], r["preset"], r["ranks"])):
        if "failed" in r:
            lines.append(
                f"| `{r['id']}` | {r.get('config', '')} | {r['preset']} | {r['ranks']} | failed ({r['failed']}) |"
            )
            continue
        one = next(
            (
                b
                for b in results
                if "failed" not in b
                and b.get("config") == r["config"]
                and b["preset"] == r["preset"]
                and b["ranks"] == 1
            ),
            None,
        )
        eff = one["newton_wall_s"] / (r["ranks"] * r["newton_wall_s"]) if one and r["ranks"] > 1 else None
        step = r["step_wall_s"] or 1.0
        poisson = (r.get("poisson") or {}).get("wall_s")
        lines.append(
            f"| `{r['id']}` | {shown(r['config'])} | {r['preset']} | {r['ranks']} | {r['dofs']} | "
            f"{r['newton_per_step']:.2f} | {r['linear_per_newton']:.1f} | {r['newton_wall_s']:.3f} | "
            f"{r['assembly_s'] / step:.0%} | {r['linear_s'] / step:.0%} | "
            f"{poisson if poisson is None else f'{poisson:.4f}'} | "
            f"{r.get('newton_over_poisson') or float('nan'):.1f} | {'' if eff is None else f'{eff:.0%}'} |"
        )
    return "\n".join(lines) + "\n"
