"""Build frozen settings dataclasses from TOML mappings, strictly.

``build(cls, data)`` walks the dataclass fields, converts and checks every value, rejects
unknown keys with their dotted path, calls each dataclass's optional ``validate()`` (which
returns a list of problems), and raises one :class:`~meterline.errors.ConfigError` that lists
every problem at once. Supported field types: ``str int float bool Path``, ``X | None``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Literal[...]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

from meterline.errors import ConfigError

T = TypeVar("T")

_MISSING = object()


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The TOML document at ``path``; a missing file or bad TOML is one :class:`ConfigError`
    naming ``what`` and the file (the one way every configuration file is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError([f"{what} not found: {path}"], str(path)) from exc
    except IsADirectoryError as exc:
        raise ConfigError([f"{what} is a directory, not a file: {path}"], str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from exc


def build(cls: type[T], data: Mapping[str, Any] | None, *, source: str | None = None, path: str = "") -> T:
    """Return ``cls`` built from ``data``; raise ConfigError listing every problem."""
    problems: list[str] = []
    value = _build_dataclass(cls, data or {}, path, problems)
    if problems:
        raise ConfigError(problems, source)
    return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _build_dataclass(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"{path or '<root>'}: expected a table, got {type(data).__name__}")
        return None
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{_join(path, key)}: unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for name, field in fields.items():
        fpath = _join(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], fpath, problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = _build_dataclass(hints[name], {}, fpath, problems)
            else:
                problems.append(f"{fpath}: required key is missing")
    if len(problems) > before:
        return None
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        problems.append(f"{path or '<root>'}: {exc}")
        return None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        for problem in validate() or ():
            problems.append(f"{path or '<root>'}: {problem}")
    return obj


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None and len(non_none) < len(args):
            return None
        if len(non_none) == 1:
            return _convert(non_none[0], value, path, problems)
        for candidate in non_none:
            trial: list[str] = []
            out = _convert(candidate, value, path, trial)
            if not trial:
                return out
        problems.append(f"{path}: {value!r} matches none of {', '.join(_name(a) for a in non_none)}")
        return None
    if origin is Literal:
        if value not in args:
            problems.append(f"{path}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
            return None
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, path, problems)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, _join(path, i), problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a table, got {type(value).__name__}")
            return None
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _convert(val_tp, v, _join(path, str(k)), problems) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        problems.append(f"{path}: expected true or false, got {value!r}")
        return None
    if tp is int:
        if isinstance(value, bool):
            problems.append(f"{path}: expected an integer, got {value!r}")
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        problems.append(f"{path}: expected an integer, got {value!r}")
        return None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{path}: expected a number, got {value!r}")
        return None
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return None
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        problems.append(f"{path}: expected a path string, got {value!r}")
        return None
    problems.append(f"{path}: unsupported setting type {_name(tp)}")
    return None


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def apply_env_overrides(data: dict[str, Any], env: Mapping[str, str], prefix: str = "METERLINE__") -> dict[str, Any]:
    """Overlay ``METERLINE__SECTION__KEY=value`` variables onto a settings mapping.

    Double underscores separate levels; names are lower-cased. Values stay strings and are
    converted (and checked) by :func:`build` like TOML values.
    """
    out = _deepcopy(data)
    for name, value in env.items():
        if not name.startswith(prefix):
            continue
        parts = [p.lower() for p in name[len(prefix):].split("__") if p]
        if not parts:
            continue
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def _deepcopy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deepcopy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deepcopy(v) for v in data]
    return data
