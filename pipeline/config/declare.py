"""Declaring settings: a settings class is a frozen dataclass whose fields are :func:`setting`\\ s.

A field's metadata names its environment variable and its flag (each may have *aliases*: other
names the same setting answers to, such as the original JIT backend's), its *fallback*
environment variables (read only when none of its own names is set), its parser, its help text,
its group (which subcommands get its flag) and how its default is shown. Everything else
is read from these declarations: loading (:mod:`pipeline.config.loading`), the flags
(:mod:`pipeline.config.flags`), ``tessera config`` and the settings tables of the docs
(:func:`describe`, :func:`markdown_table`), so none of them can disagree with the code.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import field
from typing import Any

from pipeline.config.parsers import Parser

Setting = dataclasses.Field[Any]
"""One declared setting (a dataclass field made by :func:`setting`)."""

_ENV = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FLAG = re.compile(r"^(--[a-z0-9][a-z0-9-]*|-[a-zA-Z])$")


def setting(
    default: Any,
    *,
    env: str,
    flag: str | None,
    parse: Parser,
    help: str,
    group: str = "general",
    shown: str | None = None,
    also_env: tuple[str, ...] = (),
    also_flags: tuple[str, ...] = (),
    fallback_env: tuple[str, ...] = (),
) -> Any:
    """Declare one setting: a dataclass field carrying its names, parser and help.

    ``shown`` is how the default is written in help and docs when it depends on the machine.
    ``also_env`` and ``also_flags`` are aliases: more names of the same setting (giving two of
    them different values is an error; see :mod:`pipeline.config.loading`). ``fallback_env``
    names variables that mean something broader (``AWS_REGION``: this process's own region)
    and stand in for the setting only when none of its names is set.
    """
    for name in (env, *also_env, *fallback_env):
        if not _ENV.match(name):
            raise ValueError(f"env var {name!r} is not UPPER_SNAKE_CASE")
    for name in (flag, *also_flags) if flag is not None else also_flags:
        if not _FLAG.match(name):
            raise ValueError(f"flag {name!r} is not --kebab-case or -x")
    if also_flags and flag is None:
        raise ValueError(f"{env}: flag aliases {also_flags} need a flag")
    return field(
        default=default,
        metadata={
            "env": env,
            "flag": flag,
            "parse": parse,
            "help": help,
            "group": group,
            "shown": shown,
            "also_env": also_env,
            "also_flags": also_flags,
            "fallback_env": fallback_env,
        },
    )


def settings(cls: type) -> tuple[Setting, ...]:
    """The declared settings of ``cls`` (a settings dataclass), in declaration order."""
    return dataclasses.fields(cls)


def env_names(f: Setting) -> tuple[str, ...]:
    """Every environment variable ``f`` answers to, its own first."""
    return (f.metadata["env"], *f.metadata["also_env"])


def fallback_names(f: Setting) -> tuple[str, ...]:
    """The environment variables read for ``f`` when none of :func:`env_names` is set."""
    names: tuple[str, ...] = f.metadata["fallback_env"]
    return names


def flag_names(f: Setting) -> tuple[str, ...]:
    """Every flag ``f`` answers to, its own first; none for an environment-only setting."""
    own: str | None = f.metadata["flag"]
    return (own, *f.metadata["also_flags"]) if own is not None else ()


def shown_default(f: Setting) -> str:
    """The default of ``f`` as help and docs write it."""
    if f.metadata["shown"] is not None:
        return str(f.metadata["shown"])
    if f.default is None:
        return "unset"
    if f.default == ():
        return "none"
    return str(f.default)


def describe(cls: type) -> list[dict[str, str]]:
    """One row per setting of ``cls`` (names, default, help), for `tessera config` and docs.

    ``flag`` and ``env`` are the setting's own names; ``flags`` and ``envs`` every name it
    answers to, comma-separated (a fallback marked so).
    """
    return [
        {
            "name": f.name,
            "flag": f.metadata["flag"] or "",
            "env": f.metadata["env"],
            "flags": ", ".join(flag_names(f)),
            "envs": ", ".join(
                [*env_names(f), *(f"{name} (fallback)" for name in fallback_names(f))]
            ),
            "default": shown_default(f),
            "help": f.metadata["help"],
            "group": f.metadata["group"],
        }
        for f in settings(cls)
    ]


def markdown_table(cls: type) -> str:
    """The settings of ``cls`` as a markdown table (the docs embed it; a test keeps it true)."""
    lines = ["| flags | env vars | default | what |", "| --- | --- | --- | --- |"]
    for f in settings(cls):
        flags = ", ".join(f"`{name}`" for name in flag_names(f))
        envs = ", ".join(
            [
                *(f"`{name}`" for name in env_names(f)),
                *(f"`{n}` (fallback)" for n in fallback_names(f)),
            ]
        )
        lines.append(f"| {flags} | {envs} | {shown_default(f)} | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"
