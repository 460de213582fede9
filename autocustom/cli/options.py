"""Typer options built from a config dataclass, so each option's name, default and help live in one place.

As TRL's HfArgumentParser does for argparse: field `max_steps` becomes option `--max-steps`, with the
field's default (typer shows it) and the field's `metadata["help"]`. The metadata may also carry

    "flag": "--lora/--full"   the option's spelling, for flags named other than `--field-name`
    "required": True          the dataclass default only means "not given"; the CLI demands a value
    "argument": True          a positional argument instead of an option (`import SOURCE`)
    "cli_type": str           the type the command line gives, where the field holds a parsed value
                              (an `Axis` from "formal:casual", a split tuple from list[float]): the
                              config's `__post_init__` parses it, so its errors are the config's own
    "cli": False              not an option: set by the command or the library only

and list fields (`list[str]`, `list[int]`, `list[float]`, optionally `| None`) are written on the command
line as comma-separated text: "64,256"; empty text is None where the field allows None, else [].

typer reads a callback's options with `inspect.signature` and `typing.get_type_hints`, so
`ConfigCommand` answers both from the dataclass's fields followed by the command's own options.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable
from functools import cached_property
from importlib import import_module
from typing import Any

import typer

from autocustom.cli.common import fail

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def config_options(config: str) -> Callable[[Callable[..., Any]], ConfigCommand]:
    """Decorator: `command(values, **own_options)` gets one typer option per field of the config class.

    `config` names the class, "module:Class", instead of being it, so that the class's module (which may
    import torch) is imported when typer builds the command, not when the CLI module is imported.
    """
    module, name = config.split(":")
    return lambda command: ConfigCommand(lambda: getattr(import_module(module), name), command)


class ConfigCommand:
    """A typer callback: the config's fields, then the command's own options after its first parameter.

    Called by typer, it passes the field values as one dict (name -> value, lists already split) to the
    command's first parameter and its own options by name.
    """

    def __init__(self, load_config: Callable[[], type[Any]], command: Callable[..., Any]) -> None:
        self._load_config = load_config
        self._command = command
        self.__name__ = command.__name__
        self.__doc__ = command.__doc__  # typer's command help

    @cached_property
    def _field_parameters(self) -> dict[str, inspect.Parameter]:
        config = self._load_config()
        hints = typing.get_type_hints(config)  # the fields' annotations are strings (future annotations)
        # required options first, so `--help` opens with what must be given (a config that inherits
        # shared options from a base class lists the base's fields first)
        fields = sorted(dataclasses.fields(config), key=lambda field: not field.metadata.get("required"))
        return {
            field.name: _option(field, field.metadata.get("cli_type", hints[field.name]))
            for field in fields
            if field.metadata.get("cli", True)
        }

    @cached_property
    def __signature__(self) -> inspect.Signature:
        _values, *own = inspect.signature(self._command, eval_str=True).parameters.values()
        clash = self._field_parameters.keys() & {parameter.name for parameter in own}
        if clash:
            raise TypeError(f"{self.__name__}: options {sorted(clash)} are also config fields")
        own_options = [parameter.replace(kind=_KEYWORD) for parameter in own]
        return inspect.Signature([*self._field_parameters.values(), *own_options])

    @property
    def __annotations__(self) -> dict[str, Any]:
        """What `typing.get_type_hints`, which typer also calls, reads: the signature's resolved types."""
        return {name: parameter.annotation for name, parameter in self.__signature__.parameters.items()}

    def __call__(self, **options: Any) -> Any:
        values = {name: options.pop(name) for name in self._field_parameters}
        _check_finite(values)
        return self._command(values, **options)


def _option(field: dataclasses.Field[Any], hint: Any) -> inspect.Parameter:
    """The keyword parameter typer turns into this field's option."""
    item, nullable = _list_item(hint)
    default = ... if field.metadata.get("required") else _default(field)
    if item is not None and isinstance(default, list | tuple):
        default = ",".join(map(str, default))  # the text that parses back into the default list
    callback = None if item is None else _list_parser(item, nullable)
    if field.metadata.get("argument"):
        option = typer.Argument(default, help=field.metadata.get("help"), callback=callback)
    else:
        option = typer.Option(
            default,
            field.metadata.get("flag", "--" + field.name.replace("_", "-")),
            help=field.metadata.get("help"),
            callback=callback,
        )
    annotation = hint if item is None else str | None
    return inspect.Parameter(field.name, _KEYWORD, default=option, annotation=annotation)


def _default(field: dataclasses.Field[Any]) -> Any:
    """The field's default; `...` (typer's "required") for a field that has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return ...


_LIST_ITEMS = {str: "texts", int: "integers", float: "numbers"}  # the item types, named for errors


def _list_item(hint: Any) -> tuple[type | None, bool]:
    """For a `list[T]` or `list[T] | None` field: (T, whether None is allowed); else (None, False).

    Items other than str, int and float are refused, because typer would otherwise turn a list into a
    repeated option.
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else (hint,)
    lists = [arg for arg in args if typing.get_origin(arg) is list]
    if not lists:
        return None, False
    items = typing.get_args(lists[0])
    if len(items) != 1 or items[0] not in _LIST_ITEMS:
        raise TypeError(f"{hint}: list fields must be list[str], list[int] or list[float] (comma-separated)")
    return items[0], type(None) in args


def _list_parser(item: type, nullable: bool) -> Callable[[str | None], list[Any] | None]:
    """The option callback: comma-separated text -> its stripped, non-empty parts, each an `item`.

    No text (or only commas and spaces) is None for a field that allows None, else the empty list.
    """

    def parse(text: str | None) -> list[Any] | None:
        parts = [part.strip() for part in (text or "").split(",") if part.strip()]
        if not parts:
            return None if nullable else []
        try:
            return [item(part) for part in parts]
        except ValueError:
            raise typer.BadParameter(
                f"'{text}' is not a comma-separated list of {_LIST_ITEMS[item]}"
            ) from None

    return parse


def _check_finite(values: dict[str, Any]) -> None:
    """No option takes nan or inf (every number is a size, a rate, a scale or a threshold): one line and
    exit 2 before the command runs, whatever the library would have done with it."""
    for name, value in values.items():
        numbers = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            fail(f"--{name.replace('_', '-')} {value} is not a finite number Fix: pass a number such as 1")
