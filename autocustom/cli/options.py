"""Typer options built from a config dataclass, so each option's name, default and help live in one place.

As TRL's HfArgumentParser does for argparse: field `max_steps` becomes option `--max-steps`, with the
field's default (typer shows it) and the field's `metadata["help"]`. The metadata may also carry

    "flag": "--lora/--full"   the option's spelling, for flags named other than `--field-name`
    "required": True          the dataclass default only means "not given"; the CLI demands a value

and `list[str]` fields are written on the command line as comma-separated text.

typer reads a callback's options with `inspect.signature` and `typing.get_type_hints`, so
`ConfigCommand` answers both from the dataclass's fields followed by the command's own options.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from functools import cached_property
from typing import Any

import typer

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def config_options(
    load_config: Callable[[], type[Any]],
) -> Callable[[Callable[..., Any]], ConfigCommand]:
    """Decorator: `command(values, **own_options)` gets one typer option per field of the config class.

    `load_config` returns the class instead of being it, so that the class's module (which may import
    torch) is imported when typer builds the command, not when the CLI module is imported.
    """
    return lambda command: ConfigCommand(load_config, command)


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
        return {field.name: _option(field, hints[field.name]) for field in dataclasses.fields(config)}

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
        return self._command(values, **options)


def _option(field: dataclasses.Field[Any], hint: Any) -> inspect.Parameter:
    """The keyword parameter typer turns into this field's option."""
    is_list = _is_str_list(hint)
    default = ... if field.metadata.get("required") else _default(field)
    if is_list and isinstance(default, list):
        default = ",".join(default)  # the text that parses back into the default list
    option = typer.Option(
        default,
        field.metadata.get("flag", "--" + field.name.replace("_", "-")),
        help=field.metadata.get("help"),
        callback=_split_list if is_list else None,
    )
    return inspect.Parameter(field.name, _KEYWORD, default=option, annotation=str | None if is_list else hint)


def _default(field: dataclasses.Field[Any]) -> Any:
    """The field's default; `...` (typer's "required") for a field that has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return ...


def _is_str_list(hint: Any) -> bool:
    """Whether the field is `list[str]` or `list[str] | None`: one comma-separated text on the CLI.

    Other item types are refused, because typer would otherwise turn a list into a repeated option.
    """
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    lists = [arg for arg in (typing.get_args(hint) if union else (hint,)) if typing.get_origin(arg) is list]
    if lists and lists[0] != list[str]:
        raise TypeError(f"{hint}: list fields must be list[str], given as comma-separated text")
    return bool(lists)


def _split_list(text: str | None) -> list[str] | None:
    """Comma-separated text -> its stripped, non-empty parts; no text -> None."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None
