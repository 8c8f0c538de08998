"""CLI options built from ``EngineConfig``'s dataclass fields: one source, no second list.

Each field becomes a ``--kebab-case`` typer option with the field's type and default. Its
help is the field's ``metadata["help"]`` when it has one, else the trailing comment of the
field's line in ``EngineConfig``'s source. Byte-sized fields (integer fields whose name ends
in ``_memory`` or contains ``_memory_``, e.g. ``kv_cache_memory``) also take units: ``512MiB``,
``2G``, ``1e9``.

Use :func:`engine_options` to wrap a command function: the wrapper's signature is the
command's own parameters plus one option per field, and the command receives the field
values as one dict ``engine_kwargs``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import re
import tokenize
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from dsbox.config import EngineConfig

PANEL = "Engine options (EngineConfig)"
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``"512MiB"`` -> 536870912; plain numbers are bytes. Raises typer.BadParameter."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise typer.BadParameter(f"{text!r} is not a size (examples: 1073741824, 512MiB, 2GB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@functools.cache
def field_comments(cls: type = EngineConfig) -> dict[str, str]:
    """Trailing ``# comment`` of each field line in a dataclass's class body."""
    source = inspect.getsource(cls)
    comments: dict[str, str] = {}
    last_field: tuple[str, int] | None = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and last_field is None:
            last_field = (tok.string, tok.start[0])
        elif tok.type == tokenize.COMMENT and last_field and tok.start[0] == last_field[1]:
            comments[last_field[0]] = tok.string.lstrip("#").strip()
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            last_field = None
    return comments


def field_help(field: dataclasses.Field, cls: type = EngineConfig) -> str:
    return field.metadata.get("help") or field_comments(cls).get(field.name, "")


def is_byte_field(name: str) -> bool:
    return name.endswith("_memory") or "_memory_" in name


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _option_type(tp: Any) -> Any:
    """The annotation typer sees: ``X | None`` -> ``Optional[X]``."""
    args = typing.get_args(tp)
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return typing.Optional[inner]  # noqa: UP045 (typer wants typing.Optional)
    return tp


def dataclass_parameters(cls: type, prefix: str = "", panel: str = PANEL,
                         exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword-only typer-annotated parameter (named ``prefix + field``) per field of
    the dataclass ``cls``; byte-sized fields take strings with units."""
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        tp = _option_type(hints[f.name])
        extra: dict[str, Any] = {}
        if is_byte_field(f.name):
            tp = typing.Optional[str] if default is None else str  # noqa: UP045
            extra["metavar"] = "BYTES"
            default = None if default is None else str(default)
        if hints[f.name] is bool:
            decls = (option_name(f.name) + "/" + option_name(f.name).replace("--", "--no-", 1),)
        else:
            decls = (option_name(f.name),)
        option = typer.Option(*decls, help=field_help(f, cls), rich_help_panel=panel,
                              show_default=default is not None, **extra)
        params.append(inspect.Parameter(prefix + f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=default, annotation=Annotated[tp, option]))
    return params


def with_dataclass_options(*groups: tuple[type, str, str, tuple[str, ...]]
                           ) -> Callable[[Callable], Callable]:
    """Decorator: add the fields of each ``(cls, prefix, panel, exclude)`` group to a typer
    command as options; the command receives ``groups={prefix: {field: value}}`` (byte
    sizes parsed). The wrapped function must take a ``groups`` keyword parameter."""
    members: dict[str, tuple[str, str]] = {}  # parameter name -> (prefix, field name)
    extra: list[inspect.Parameter] = []
    for cls, prefix, panel, exclude in groups:
        for p in dataclass_parameters(cls, prefix, panel, exclude):
            members[p.name] = (prefix, p.name[len(prefix):])
            extra.append(p)

    def wrap(func: Callable) -> Callable:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "groups"]
        clash = set(members) & {p.name for p in own}
        if clash:
            raise TypeError(f"{func.__name__}: parameters {sorted(clash)} clash with "
                            "dataclass fields")

        @functools.wraps(func)
        def wrapper(**kwargs):
            grouped: dict[str, dict[str, Any]] = {prefix: {} for _, prefix, _, _ in groups}
            for name in [n for n in kwargs if n in members]:
                prefix, field_name = members[name]
                value = kwargs.pop(name)
                if is_byte_field(field_name) and value is not None:
                    value = parse_bytes(value)
                grouped[prefix][field_name] = value
            return func(groups=grouped, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + extra)
        wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
        del wrapper.__wrapped__  # typer must see the new signature, not func's
        return wrapper

    return wrap


def engine_parameters(exclude: tuple[str, ...] = ("model",)) -> list[inspect.Parameter]:
    """One keyword-only ``inspect.Parameter`` per EngineConfig field, typer-annotated."""
    return dataclass_parameters(EngineConfig, "", PANEL, exclude)


def engine_options(exclude: tuple[str, ...] = ("model",)) -> Callable[[Callable], Callable]:
    """Decorator: add every EngineConfig field (but ``exclude``) to a typer command as an
    option; the command gets them as ``engine_kwargs`` (only the fields, byte sizes parsed).

    The wrapped function must take an ``engine_kwargs`` keyword parameter.
    """

    def wrap(func: Callable) -> Callable:
        @functools.wraps(func)
        def with_groups(groups, **kwargs):
            return func(engine_kwargs=groups[""], **kwargs)

        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "engine_kwargs"]
        groups_param = inspect.Parameter("groups", inspect.Parameter.KEYWORD_ONLY)
        with_groups.__signature__ = sig.replace(parameters=own + [groups_param])
        del with_groups.__wrapped__
        return with_dataclass_options((EngineConfig, "", PANEL, exclude))(with_groups)

    return wrap
