"""Typed configuration: nested dataclasses filled from YAML/TOML files and overrides.

Unknown keys are an error (a typo must not silently fall back to a default), values are
checked against the field types, and the resolved config can be written next to outputs.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from typing import Any, TypeVar

import fsspec

from skypile.errors import ConfigError  # noqa: F401  (defined there: models.py needs it too)

T = TypeVar("T")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}={value!r}: use one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a section (mapping), got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_type, where): _coerce(v, value_type, f"{where}.{k}")
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0",
                                                        "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} "
                          f"(known here: {', '.join(sorted(fields))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def load_file(path: str) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file from a local path or fsspec URL."""
    try:
        with fsspec.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    try:
        if path.endswith(".toml"):
            import tomllib
            data = tomllib.loads(text)
        elif path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:  # yaml, toml and json each raise their own error types
        raise ConfigError(f"cannot parse config {path}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def field_type(cls: type, dotted: str) -> Any:
    """The declared type of ``a.b.c`` inside dataclass ``cls`` (None when not a field)."""
    tp: Any = cls
    for part in dotted.split("."):
        tp = _unwrap_optional(tp)
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def parse_value(text: str, tp: Any = None) -> Any:
    """An override's value: kept as text when the field is typed ``str``, else a YAML scalar.

    ``--labels.default={lang}`` must stay the string ``{lang}``, not become a YAML mapping;
    ``--steps=200`` becomes 200 and ``--read.fields=[a, b]`` a list.
    """
    if _unwrap_optional(tp) is str or not text.strip():
        return text
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c=value`` inside nested dicts (the value as given)."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def split_overrides(args: list[str], cls: type | None = None) -> tuple[list[str], list[str]]:
    """Split command-line leftovers into our ``section.key=value`` overrides and the rest.

    ``--a.b=v`` and ``--a.b v`` (a dotted name) are ours, and so is ``--name=v`` when
    ``name`` is a top-level field of ``cls``; everything else is returned untouched (the
    pipelines pass it to Beam, the trainer refuses it).
    """
    top = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
    ours, rest = [], []
    it = iter(args)
    for arg in it:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        dotted = "." in name and not name.startswith(".") and not name.endswith(".")
        if dotted or (name and name in top):
            if "=" not in arg:
                value = next(it, None)
                if value is None:
                    raise ConfigError(f"{arg} needs a value")
                arg = f"{arg}={value}"
            ours.append(arg[2:])
        else:
            rest.append(arg)
    return ours, rest


def load(cls: type[T], path: str | None = None, overrides: list[str] | None = None,
         base: dict[str, Any] | None = None) -> T:
    """File, then ``section.key=value`` overrides, on top of ``base`` and the defaults."""
    data: dict[str, Any] = json.loads(json.dumps(base or {}))
    if path:
        from skypile.files.models import rebase_paths  # a file's model paths follow the file

        _merge(data, rebase_paths(cls, load_file(path), path))
    for item in overrides or []:
        key, eq, value = item.partition("=")
        key = key.lstrip("-")
        if not eq or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        set_dotted(data, key, parse_value(value, field_type(cls, key)))
    return from_dict(cls, data)


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


# ---- flags generated from a config type (dolma-style: one config type per subcommand) ----

def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring: the string literal written under it in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per top-level field of dataclass ``cls`` to ``parser``.

    The flag is ``--field-name`` (or ``metadata["flag"]``), its help is the field's
    docstring, and values stay text until :func:`from_args` checks them against the field
    types. Lists take several values (``nargs="+"``, or ``metadata["action"]="append"`` for
    a repeated flag); a ``Literal`` lists its choices; a ``bool`` that defaults to false is
    a switch. Nested sections are set with ``--section.key=value``.
    """
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            continue
        meta = f.metadata
        kw: dict[str, Any] = {"dest": f.name, "help": docs.get(f.name, ""), "default": None}
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if typing.get_origin(tp) is typing.Literal:
            kw["choices"] = typing.get_args(tp)
        if tp is bool:
            kw["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
            kw.pop("metavar", None)
        elif typing.get_origin(tp) in (list, tuple):
            if meta.get("action") == "append":
                kw["action"] = "append"
            else:
                kw["nargs"] = meta.get("nargs", "+")
        if _is_required(f):
            kw["required"] = True
        elif "action" not in kw and f.default not in (None, "",
                                                                               dataclasses.MISSING):
            kw["help"] += f" (default: {f.default})"
        parser.add_argument(meta.get("flag", "--" + f.name.replace("_", "-")), **kw)


def from_args(cls: type[T], ns: argparse.Namespace, overrides: list[str] | None = None,
              path: str | None = None) -> T:
    """The config of type ``cls`` from parsed flags (see :func:`add_flags`), an optional
    config file and ``section.key=value`` overrides; flags win over the file."""
    data: dict[str, Any] = load_file(path) if path else {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(ns, f.name, None)
        if value is None or dataclasses.is_dataclass(_unwrap_optional(hints[f.name])):
            continue
        if isinstance(value, str) and hints[f.name] is not str:
            value = parse_value(value, hints[f.name])
        data[f.name] = value
    missing = [f.name for f in dataclasses.fields(cls) if _is_required(f) and f.name not in data]
    if missing:
        raise ConfigError(f"--{missing[0].replace('_', '-')} is required")
    return load(cls, None, overrides, base=data)
