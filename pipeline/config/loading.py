"""Loading settings: defaults < environment < flags, for any settings class of
:mod:`pipeline.config.declare`; and the way back, settings → environment, for child processes.

A setting may answer to several environment variables (its own and aliases). Any of them may be
given; giving two of them *different* values is an error naming both, since either choice
would silently drop a value somebody meant. A fallback variable is read only when none of them
is set. Flags win over the environment, as always.

Errors: :class:`~pipeline.errors.ConfigError` naming the variable or flag, the text given and
what would be accepted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pipeline.config.declare import Setting, env_names, fallback_names, settings
from pipeline.errors import ConfigError

T = TypeVar("T")


def parse_text(f: Setting, source: str, text: str) -> Any:
    """``text`` parsed as setting ``f``; ``source`` (the name it came by) goes in the error."""
    try:
        return f.metadata["parse"](text)
    except ValueError as exc:
        reason = str(exc)
        if "invalid literal" in reason or "could not convert" in reason:
            reason = "not a number"
        raise ConfigError(f"{source}={text!r}: {reason}") from exc


def conflict(first: str, first_text: str, second: str, second_text: str) -> ConfigError:
    """The error for two names of one setting given different values."""
    return ConfigError(
        f"{first}={first_text!r} and {second}={second_text!r} are two names of one setting "
        "with different values: set one of them, or both to the same value"
    )


def _from_env(f: Setting, environ: Mapping[str, str]) -> tuple[bool, Any]:
    """(given, value) of ``f`` in ``environ``, whichever of its names carry it."""
    given: tuple[str, str, Any] | None = None
    for name in env_names(f):
        text = environ.get(name)
        if text is None:
            continue
        value = parse_text(f, name, text)
        if given is None:
            given = (name, text, value)
        elif value != given[2]:
            raise conflict(given[0], given[1], name, text)
    if given is not None:
        return True, given[2]
    for name in fallback_names(f):
        text = environ.get(name)
        if text is not None:
            return True, parse_text(f, name, text)
    return False, None


def parse_values(
    cls: type, env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Parsed values of the settings of ``cls`` given in ``env`` (default ``os.environ``) and
    ``flags`` (field name → raw text; flags win)."""
    environ = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in settings(cls):
        given, value = _from_env(f, environ)
        if given:
            values[f.name] = value
    by_name = {f.name: f for f in settings(cls)}
    for name, raw in (flags or {}).items():
        if name not in by_name:
            raise ConfigError(f"unknown setting {name!r}")
        f = by_name[name]
        values[name] = parse_text(f, f.metadata["flag"] or name, raw)
    return values


def env_value(cls: type, name: str, env: Mapping[str, str] | None = None) -> Any:
    """Setting ``name`` of ``cls`` from the environment alone (its default if none of its names
    is set): for the few settings needed before the command line is read."""
    f = next((f for f in settings(cls) if f.name == name), None)
    if f is None:
        raise ConfigError(f"unknown setting {name!r}")
    given, value = _from_env(f, os.environ if env is None else env)
    return value if given else f.default


def build(
    cls: type[T], env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
) -> T:
    """An instance of the settings class ``cls``: defaults, then ``env``, then ``flags``."""
    return cls(**parse_values(cls, env, flags))


def to_env(config: Any, groups: Iterable[str] | None = None) -> dict[str, str]:
    """Every setting of ``config`` (of ``groups``) as environment variables: how processes
    started by this one get the same settings, flags included.

    Each value goes under every name of its setting: a child inherits this process's
    environment too, and an alias left there with an older value would contradict it. Fallback
    variables are left alone: they mean more than the setting (``AWS_REGION``).
    """
    wanted = set(groups) if groups is not None else None
    env: dict[str, str] = {}
    for f in settings(type(config)):
        if wanted is not None and f.metadata["group"] not in wanted:
            continue
        value = getattr(config, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, tuple):
            text = ",".join(f"{k}={v}" for k, v in value)
        else:
            text = str(value)
        env.update(dict.fromkeys(env_names(f), text))
    return env
