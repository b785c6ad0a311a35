"""`nzsp-fem CONFIG.yaml`: validate, then run one simulation or a study.

User errors (config, geometry, output directory) print one line and exit 2; a run that
stops because the time step fell below dt_min exits 3; results that cannot be written
(disk full, quota, read-only or removed output directory) print one line and exit 5.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from mpi4py import MPI

from .config import ConfigError, load_config
from .exit_codes import EXIT_OUTPUT, EXIT_USAGE, STATUS_EXIT
from .mesh import MeshError, spec_from_config, validate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nzsp-fem", description="Phase-field model of Na dendrite growth along grain boundaries in NZSP."
    )
    p.add_argument("config", help="YAML config file (or: nzsp-fem animate RESULTS_DIR, see animate --help)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value, e.g. --set materials.grain_boundary.E='20 GPa'",
    )
    p.add_argument(
        "--check", action="store_true", help="validate, print the resolved config with derived quantities, and exit"
    )
    p.add_argument("-o", "--output", help="output directory (default results/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--restart", action="store_true", help="resume from the last complete checkpoint")
    p.add_argument("-v", "--verbose", action="count", default=None, help="more output (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the final summary")
    return p


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    if MPI.COMM_WORLD.rank == 0:
        print(f"nzsp-fem: error: {message}", file=sys.stderr, flush=True)
    return code


def _animate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nzsp-fem animate",
        description="Animated GIF of eta over the output times of a run (or of each case of a study), "
        "read from its fields/*.bp; written to figures/eta.gif.",
    )
    p.add_argument("results", help="results directory of a run or a study")
    p.add_argument("--current", action="store_true", help="also |i| (log scale); writes figures/eta_current.gif")
    p.add_argument("-o", "--output", help="GIF file to write (one run only)")
    p.add_argument("--frame-ms", type=int, default=500, help="milliseconds per frame (default 500)")
    return p


def _animate(argv: list[str]) -> int:
    args = _animate_parser().parse_args(argv)
    if args.frame_ms < 1:
        return _fail("--frame-ms: expected a positive number of milliseconds")
    if MPI.COMM_WORLD.rank != 0:
        return 0  # reading and drawing are serial
    from .io.animation import AnimationError, animate_results

    try:
        written = animate_results(args.results, args.output, current=args.current, frame_ms=args.frame_ms)
    except AnimationError as err:
        return _fail(str(err))
    for path, frames in written:
        print(f"{path}: {frames} frames")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["animate"]:
        return _animate(argv[1:])
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.verbose is not None:
            cfg.output.verbosity = min(3, 1 + args.verbose)
        if args.quiet:
            cfg.output.verbosity = 0
    except ConfigError as err:
        return _fail(str(err))

    if args.check:
        return _check(cfg)

    # Deferred so that bad input is reported without waiting for DOLFINx to load (~1-2 s).
    from .io.rundir import OutputError
    from .io.storage import StorageError, hard_exit, needs_hard_exit
    from .run import Simulation, output_directory
    from .study import run_study

    try:
        # Geometry errors before the output directory exists (a half-made one blocks the rerun).
        validate(spec_from_config(cfg))
        outdir = output_directory(cfg, args.output)
        if cfg.study is not None:
            code = run_study(cfg, outdir, overwrite=args.overwrite, restart=args.restart)
        else:
            sim = Simulation(cfg, MPI.COMM_WORLD)
            summary = sim.run(outdir, overwrite=args.overwrite, restart=args.restart)
            code = STATUS_EXIT[summary["status"]]
    except (ConfigError, MeshError, OutputError) as err:
        code = _fail(str(err))
    except StorageError as err:
        code = _fail(str(err), EXIT_OUTPUT)
    if needs_hard_exit():
        hard_exit(code)  # an ADIOS2 engine failed: its destructor would abort the process
    return code


def _check(cfg) -> int:
    from .physics.scaling import Scaling

    try:
        validate(spec_from_config(cfg))
    except MeshError as err:
        return _fail(str(err))
    if MPI.COMM_WORLD.rank == 0:
        resolved = cfg.model_dump(mode="json")
        scaling = Scaling(cfg)
        resolved["derived"] = scaling.derived_quantities()
        resolved["dimensionless_groups"] = scaling.groups()
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0
