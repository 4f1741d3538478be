"""Options declared once: a dataclass field carries its flag, its environment
variable and its help. The argument parser, the defaults taken from the
environment and the documentation tables (docs/configuration.md) all follow
from that one declaration.

    @dataclass(frozen=True)
    class Config:
        port: int = option(6001, "--port", "BALANCER_PORT", "listen port", parse=int)

A value from the environment goes through the same parse as the flag, so a
bad one is refused with the flag's message and the variable's name. An on/off
flag is declared with switch(): the flag alone turns it on, its variable takes
1 or 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    shown_default: str | None = None  # for help and docs, when str(default) says less
    group: str = "general"
    switch: bool = False  # an on/off flag: given alone, it turns the option on


def option(default: Any, flag: str, env: str, help: str, *, parse: Callable[[str], Any] = str,
           choices: tuple[str, ...] | None = None, shown_default: str | None = None,
           group: str = "general") -> Any:
    """A dataclass field declared as a command-line option."""
    return dataclasses.field(default=default, metadata={
        "option": Option(flag, env, help, parse, choices, shown_default, group)})


def on_off(text: str) -> bool:
    """A switch's value from its environment variable: 1/true/yes/on or 0/false/no/off (or empty)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1 or 0 (true/false, yes/no, on/off), got {text!r}")


def switch(flag: str, env: str, help: str, *, group: str = "general") -> Any:
    """A dataclass field declared as an on/off flag, off by default: the flag
    alone (no value) or its environment variable set to 1 turns it on."""
    return dataclasses.field(default=False, metadata={
        "option": Option(flag, env, help, on_off, None, "off", group, switch=True)})


def declared(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def shown_default(f: dataclasses.Field[Any], opt: Option) -> str:
    if opt.shown_default is not None:
        return opt.shown_default
    value = f.default
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if value is None or value == "":
        return "(empty)"
    return str(value)


def comma_list(item: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    """A parse for comma-separated values; empty items are dropped."""
    def parse(text: str) -> tuple[T, ...]:
        try:
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from None
    parse.__name__ = f"comma-separated {getattr(item, '__name__', 'value')}"
    return parse


def optional(item: Callable[[str], T]) -> Callable[[str], T | None]:
    """A parse where an empty value means None (the built-in default)."""
    def parse(text: str) -> T | None:
        return item(text) if text.strip() else None
    parse.__name__ = getattr(item, "__name__", "value")
    return parse


def at_least(low: float, kind: Callable[[str], Any] = float, high: float = math.inf,
             *, above: bool = False) -> Callable[[str], Any]:
    """A parse for a finite number of kind from low (or above it) up to high:
    a zero, negative or NaN timeout, limit or interval would hang, spin or
    refuse everything, so it stops the process at start with the value named."""
    if high < math.inf:
        bound = f"above {low:g} and at most {high:g}" if above else f"from {low:g} to {high:g}"
    else:
        bound = f"above {low:g}" if above else f"{low:g} or more"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
        if not math.isfinite(value) or not (low < value if above else low <= value) or value > high:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
        return value
    parse.__name__ = getattr(kind, "__name__", "number")
    return parse


PORT = at_least(0, int, 65535)  # 0: any free port
COUNT = at_least(1, int)  # sizes, limits and thread counts
NON_NEGATIVE = at_least(0, int)  # a count or limit that may be 0 (none, or no such limit)
SECONDS = at_least(0)  # a wait that may be none
POSITIVE_SECONDS = at_least(0, above=True)  # timeouts, intervals, durations


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog="Every option also reads the environment variable in brackets.")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f, opt in declared(cls):
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = parser.add_argument_group(opt.group)
        help = f"{opt.help} [{opt.env}; default: {shown_default(f, opt)}]"
        if opt.switch:
            group.add_argument(opt.flag, dest=f.name, action="store_true", default=f.default, help=help)
            continue
        group.add_argument(opt.flag, dest=f.name, type=opt.parse, choices=opt.choices, default=f.default,
                           metavar=None if opt.choices else f.name.upper(), help=help)
    return parser


def parse_config(cls: type[T], argv: Sequence[str] | None, prog: str, description: str,
                 environ: Mapping[str, str] | None = None) -> T:
    """cls from flags, then environment variables, then declared defaults."""
    environ = os.environ if environ is None else environ
    parser = build_parser(cls, prog, description)
    for f, opt in declared(cls):
        if opt.env in environ:
            text = environ[opt.env]
            try:
                value = opt.parse(text)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                # Not the value itself: it may hold a password (DATABASE_URL).
                parser.error(f"environment variable {opt.env} is not valid for {opt.flag}: {exc}")
            if opt.choices and value not in opt.choices:
                parser.error(f"environment variable {opt.env}: choose from {', '.join(opt.choices)}")
            parser.set_defaults(**{f.name: value})
    return cls(**vars(parser.parse_args(argv)))


def from_environment(cls: type, name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One option of cls as its environment variable sets it (its declared
    default when unset), for a helper that runs beside the process (a
    worker's preStop hook) and must read the same setting the same way."""
    environ = os.environ if environ is None else environ
    for f, opt in declared(cls):
        if f.name == name:
            return opt.parse(environ[opt.env]) if opt.env in environ else f.default
    raise KeyError(f"{cls.__name__} declares no option {name!r}")


def markdown_text(text: str) -> str:
    """Text for a Markdown table cell: '<token>' would be taken for an HTML tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def markdown_table(cls: type) -> str:
    """The options of cls as the documentation's table."""
    rows = ["| flag | env | default | meaning |", "|---|---|---|---|"]
    for f, opt in declared(cls):
        rows.append(f"| `{opt.flag}` | `{opt.env}` | `{shown_default(f, opt)}` | {markdown_text(opt.help)} |")
    return "\n".join(rows) + "\n"
