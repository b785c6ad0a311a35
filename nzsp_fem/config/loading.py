"""Loading a run configuration: YAML files with ``extends:``, ``--set`` overrides, and
pydantic errors turned into one-line messages that name the key path."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .schema import Config, ConfigError

# A model validator's message that starts with its own sub-path ("grain.yield_stress: ...").
_SUBPATH = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
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


def _read_yaml(path: Path, chain: tuple = ()) -> dict:
    """A config file as a dict; ``extends: other.yaml`` (relative to it) is merged beneath."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
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
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"extends: expected a file name, got {base!r}")
        base_path = (path.parent / base).resolve()
        if base_path in chain:
            raise ConfigError(f"extends: {base} includes itself")
        data = _merged(_read_yaml(base_path, chain + (base_path,)), data)
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    data = _read_yaml(path, (path.resolve(),))
    data["name"] = data.get("name") or path.stem
    for text in overrides:
        key, value = parse_override(text)
        apply_override(data, key, value)
    return parse_config(data)


def with_value(cfg: Config, dotted: str, value: Any) -> Config:
    """A copy of ``cfg`` with one key changed, revalidated (studies use it)."""
    data = cfg.model_dump()
    data["study"] = None
    apply_override(data, dotted.split("."), copy.deepcopy(value))
    return parse_config(data)
