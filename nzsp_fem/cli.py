"""`nzsp-fem CONFIG.yaml`: validate, then run one simulation or a study.

User errors (config, geometry, output directory) print one line and exit 2; a run that
stops because the time step fell below dt_min exits 3.
"""

from __future__ import annotations

import argparse
import sys

import yaml

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nzsp-fem",
        description="Phase-field model of Na dendrite growth along grain boundaries in NZSP.")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, e.g. --set materials.grain_boundary.E='20 GPa'")
    p.add_argument("--check", action="store_true",
                   help="validate, print the resolved config with derived quantities, and exit")
    p.add_argument("-o", "--output", help="output directory (default results/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--restart", action="store_true", help="resume from the last complete checkpoint")
    p.add_argument("-v", "--verbose", action="count", default=None, help="more output (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the final summary")
    return p


def _fail(message: str) -> int:
    from mpi4py import MPI
    if MPI.COMM_WORLD.rank == 0:
        print(f"nzsp-fem: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .config import ConfigError, load_config

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

    from .mesh import MeshError, validate
    from .outputs import OutputError
    from .run import polycrystal_spec, run_config
    try:
        # Geometry errors before the output directory exists (a half-made one blocks the rerun).
        validate(polycrystal_spec(cfg))
        return run_config(cfg, output=args.output, overwrite=args.overwrite, restart=args.restart)
    except (ConfigError, MeshError, OutputError) as err:
        return _fail(str(err))


def _check(cfg) -> int:
    from mpi4py import MPI

    from .mesh import MeshError, validate
    from .run import polycrystal_spec
    from .scaling import Scaling
    try:
        validate(polycrystal_spec(cfg))
    except MeshError as err:
        return _fail(str(err))
    if MPI.COMM_WORLD.rank == 0:
        resolved = cfg.model_dump(mode="json")
        resolved["derived"] = cfg.derived()
        resolved["dimensionless_groups"] = Scaling(cfg).groups()
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
    return 0
