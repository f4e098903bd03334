"""Strict conversion between plain dicts (YAML) and typed dataclass configs.

Unknown keys are an error that names the key, its path and the allowed keys;
values are coerced to the field's annotated type (so ``1`` in YAML can fill a
``float`` field, ``"1e-3"`` too), and nested dataclasses are built recursively. A
``Literal[...]`` field accepts only its choices, in a dict (:func:`from_dict`) as in a
config built in Python (:func:`check_choices`); the message names the ``section.key``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")

__all__ = ["check_choices", "choices", "from_dict", "to_dict"]


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Literal:
        if value in args and not (isinstance(value, bool) and bool not in map(type, args)):
            return value
        raise ValueError(_choice_error(path, args, value))
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{path}: {value!r} fits none of {annotation}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, path)
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {value!r}")
        if (origin or annotation) is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{path}: expected {len(args)} values, got {value!r}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, t, f"{path}[{i}]") for i, (v, t) in pairs)
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{path}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (int, str)):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{path}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


def _choice_error(path: str, choices: tuple, value: Any) -> str:
    return f"{path} must be one of {', '.join(map(str, choices))}, got {value!r}"


def check_choices(config: Any, path: str = "") -> None:
    """Raise a one-line ValueError, naming ``section.key``, where a ``Literal`` field of
    the dataclass ``config`` (or of one nested in it, or in a list field of literals)
    holds a value outside its choices."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        where = f"{path}.{f.name}" if path else f.name
        annotation = hints.get(f.name)
        if typing.get_origin(annotation) is typing.Literal:
            if value not in typing.get_args(annotation):
                raise ValueError(_choice_error(where, typing.get_args(annotation), value))
        elif typing.get_origin(annotation) in (list, tuple):
            inner = typing.get_args(annotation)[:1]
            if inner and typing.get_origin(inner[0]) is typing.Literal:
                for i, item in enumerate(value):
                    if item not in typing.get_args(inner[0]):
                        raise ValueError(
                            _choice_error(f"{where}[{i}]", typing.get_args(inner[0]), item)
                        )
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_choices(value, where)


def choices(cls: type, name: str) -> tuple:
    """The choices of the ``Literal`` field ``name`` of dataclass ``cls``."""
    return typing.get_args(typing.get_type_hints(cls)[name])


def from_dict(cls: type[T], values: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys raise ``ValueError``."""
    if not isinstance(values, dict):
        raise ValueError(f"{path or cls.__name__}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f" in '{path}'" if path else ""
        raise ValueError(f"unknown config key(s) {unknown}{where}; allowed: {sorted(fields)}")
    kwargs = {
        name: _coerce(value, hints[name], f"{path}.{name}" if path else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) ready for YAML."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)
