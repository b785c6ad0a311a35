"""Loading a run configuration: YAML files with ``extends:``, ``--set`` overrides, and
pydantic errors turned into one-line messages that name the key path."""

from __future__ import annotations

import copy
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .protocol import protocol_end_conflict
from .schema import Config, ConfigError

# A model validator's message that starts with its own sub-path ("grain.yield_stress: ...").
_SUBPATH = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


def _unwrap(tp: Any) -> Any:
    """``tp`` without Annotated metadata and without None in an optional."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        members = _union_members(tp)
        if members is not None and len(members) == 1:
            tp = members[0]
            continue
        return tp


def _union_members(tp: Any) -> list | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return None


def _branch(members: list, label: Any, next_part: Any) -> Any:
    """The union member an error location continues into: a list for an index, a mapping
    or the model that pydantic's branch ``label`` names (or that has the key) for a key."""
    for m in members:
        origin = typing.get_origin(_unwrap(m)) or _unwrap(m)
        if isinstance(next_part, int) and origin in (list, tuple, set):
            return m
        if isinstance(next_part, str):
            if origin is dict:
                return m
            if isinstance(origin, type) and issubclass(origin, BaseModel):
                if label == origin.__name__ or next_part in origin.model_fields:
                    return m
    return Any


def _key_path(loc: tuple, model: type[BaseModel]) -> tuple[tuple, int | None]:
    """The error location as the user's key path, and where (if anywhere) it passed a union.

    Pydantic puts a label of the branch type into the location of an error inside a union
    (``nuclei.positions.literal['grain_centres']``); users never wrote that, so the model's
    annotations tell which parts are labels and they are dropped.
    """
    out: list = []
    union_at = None
    tp: Any = model
    i = 0
    while i < len(loc):
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members is not None and len(members) > 1:
            union_at = len(out) if union_at is None else union_at
            i += 1
            tp = _branch(members, loc[i - 1], loc[i] if i < len(loc) else None)
            continue
        part = loc[i]
        out.append(part)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            tp = field.annotation if field is not None else Any
        elif origin in (list, tuple, set):
            tp = (typing.get_args(tp) or (Any,))[0]
        elif origin is dict:
            tp = (typing.get_args(tp) or (Any, Any))[1]
        else:
            tp = Any
        i += 1
    return tuple(out), union_at


def _relevant_error(err: ValidationError, model: type[BaseModel]) -> tuple[Any, tuple]:
    """The error to report and its key path. For a value that fits no branch of a union,
    pydantic reports every branch; the branch that got deepest into the value is the one
    the user meant (a list of points with one wrong unit, not the literal), and at equal
    depth a wrong value beats a wrong type."""
    found = [(e, *_key_path(tuple(e["loc"]), model)) for e in err.errors()]
    first, path, union_at = found[0]
    if union_at is None:
        return first, path
    same_union = [f for f in found if f[2] == union_at and f[1][:union_at] == path[:union_at]]
    best = max(same_union, key=lambda f: (len(f[1]), not f[0]["type"].endswith("_type")))
    return best[0], best[1]


def _format_error(err: ValidationError, model: type[BaseModel] = Config) -> str:
    first, loc = _relevant_error(err, model)
    path = ".".join(str(p) for p in loc)
    msg = first["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    if (
        first["type"] not in ("extra_forbidden", "missing")
        and "got" not in msg
        and not isinstance(first.get("input"), (dict, list))
    ):
        msg = f"{msg}, got {first['input']!r}"
    # Model validators name their own sub-path ("grain.yield_stress: ..."): join it on.
    if path and _SUBPATH.match(msg):
        return f"{path}.{msg}"
    return f"{path}: {msg}" if path else msg


def _merged(defaults: Any, given: Any) -> Any:
    """Sections given by the user are laid over the defaults; values and lists replace."""
    if isinstance(defaults, dict) and isinstance(given, dict):
        out = dict(defaults)
        for key, value in given.items():
            out[key] = _merged(defaults.get(key), value) if key in defaults else value
        return out
    return given


def parse_config(data: dict) -> Config:
    """A config from a mapping of sections (the user's own keys; defaults fill the rest).
    Raises ConfigError with a one-line message naming the key."""
    cfg = _validated(data)
    # Only the user's own keys tell a given t_end from the default one.
    conflict = protocol_end_conflict(data)
    if conflict:
        raise ConfigError(conflict)
    return cfg


def _validated(data: Any) -> Config:
    """The schema's validation alone (with_value's data is a resolved config, whose t_end
    the protocol already set)."""
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of sections at the top level")
    try:
        return Config.model_validate(_merged(Config().model_dump(), data))
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key.path=value")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path[: i + 1])}: is not a section, cannot set {'.'.join(path)}")
        node = child
    node[path[-1]] = value


def _outside_runtime_hint(path: Path) -> str:
    """Why a file may be missing inside bin/nzsp-env's root file system, which shows only
    the repository, the working directory and the directories of paths on its command line
    (a file reached through ``extends:`` from elsewhere is none of those)."""
    if os.environ.get("NZSP_IN_ENV") != "1":
        return ""
    where = Path(os.path.abspath(path))
    repo = Path(__file__).resolve().parents[2]
    if where.is_relative_to(repo) or where.is_relative_to(Path.cwd()):
        return ""
    return (
        " (inside bin/nzsp-env only the repository, the working directory and the directories of "
        "paths on its command line are visible: run from a directory that contains it)"
    )


# Input files named in a config are relative to that config file (not to the working
# directory), so a config moves together with its inputs, also through `extends:`.
_FILE_KEYS = (("microstructure", "image"),)


def _resolve_files(data: dict, directory: Path) -> None:
    for section, key in _FILE_KEYS:
        node = data.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = str((directory / Path(node[key]).expanduser()).absolute())


def _read_yaml(path: Path, chain: tuple = ()) -> dict:
    """A config file as a dict; ``extends: other.yaml`` (relative to it) is merged beneath."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file{_outside_runtime_hint(path)}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML") from None
    if data is None:
        raise ConfigError(f"{path}: empty config file (write '{{}}' to run with all defaults)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    _resolve_files(data, path.parent)
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"extends: expected a file name, got {base!r}")
        base_path = (path.parent / base).resolve()
        if base_path in chain:
            raise ConfigError(f"extends: {base} includes itself")
        data = _merged(_read_yaml(base_path, chain + (base_path,)), data)
    return data


def load_config(source: str | Path | dict | Config, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """A validated config from a YAML file (``extends:`` resolved, name defaulting to the
    file's stem), a mapping of sections, or a Config, with ``overrides`` applied: --set
    texts (``["time.t_end=1 ms"]``) or a mapping (``{"time.t_end": "1 ms"}``). All three
    sources go through the same validation; errors are one-line ConfigErrors."""
    if isinstance(source, Config):
        data = source.model_dump()
        if data.get("protocol") is not None:
            # Set from the protocol when the Config was made; an override may still give one.
            del data["time"]["t_end"]
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = _read_yaml(path, (path.resolve(),))
        data["name"] = data.get("name") or path.stem
    else:
        raise ConfigError(f"expected a YAML path, a mapping or a Config, got {type(source).__name__}")
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(t) for t in overrides)
    for key, value in items:
        apply_override(data, key.split(".") if isinstance(key, str) else list(key), value)
    return parse_config(data)


def as_config(source: str | Path | dict | Config) -> Config:
    """``source`` as a validated Config. A Config is revalidated as a whole: checks across
    sections (a protocol and t_end, output times within the run) do not run when one
    field is assigned, and model_copy(update=...) validates nothing."""
    return load_config(source)


def with_value(cfg: Config, dotted: str, value: Any) -> Config:
    """A copy of ``cfg`` with one key changed, revalidated (studies use it)."""
    data = cfg.model_dump()
    data["study"] = None
    apply_override(data, dotted.split("."), copy.deepcopy(value))
    return _validated(data)
