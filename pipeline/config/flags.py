"""Settings as command-line flags: one flag per setting of a settings class (plus its aliases),
and reading back which of them a user gave.

Flags are kept as text and default to :data:`argparse.SUPPRESS`, so that only the flags a user
gave override the environment; :func:`given_flags` hands them to
:func:`pipeline.config.loading.parse_values`. On/off settings are flags without a value.

Errors: :class:`~pipeline.errors.ConfigError` when two names of one setting were given
different values (``--instance-provider docker --instance-provider-path ec2``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from pipeline.config import parsers
from pipeline.config.declare import env_names, flag_names, settings, shown_default
from pipeline.config.loading import conflict, parse_text

GIVEN_BY = "_settings_given_by"
"""Namespace attribute: setting name → {flag as typed → text}, kept by :class:`_Remember`."""


class _Remember(argparse.Action):
    """Store the flag's text (or, for an on/off flag, its ``const``) and remember which of the
    setting's names gave it: argparse keeps only the last value of a ``dest``, so two aliases
    with different values would otherwise go unnoticed."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        text = self.const if self.nargs == 0 else values
        setattr(namespace, self.dest, text)
        by_setting: dict[str, dict[str, Any]] = getattr(namespace, GIVEN_BY, None) or {}
        by_setting.setdefault(self.dest, {})[option_string or self.dest] = text
        setattr(namespace, GIVEN_BY, by_setting)


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, groups: Iterable[str] | None = None
) -> None:
    """Add a flag for every setting of ``cls`` (of ``groups``, default all) to ``parser``."""
    wanted = set(groups) if groups is not None else None
    by_group: dict[str, argparse._ArgumentGroup] = {}
    for f in settings(cls):
        meta = f.metadata
        names = flag_names(f)
        if not names or (wanted is not None and meta["group"] not in wanted):
            continue
        group = by_group.get(meta["group"])
        if group is None:
            group = parser.add_argument_group(f"{meta['group']} settings")
            by_group[meta["group"]] = group
        envs = ", ".join(env_names(f))
        help_text = f"{meta['help']} [env {envs}; default {shown_default(f)}]"
        if meta["parse"] is parsers.boolean:
            group.add_argument(
                *names,
                dest=f.name,
                action=_Remember,
                nargs=0,
                const="true",
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                *names,
                dest=f.name,
                action=_Remember,
                metavar=f.name.upper(),
                default=argparse.SUPPRESS,
                help=help_text,
            )


def given_flags(ns: argparse.Namespace, cls: type) -> dict[str, str]:
    """The flags a user gave for the settings of ``cls``: setting name → text.

    Raises :class:`~pipeline.errors.ConfigError` naming both flags when two names of one
    setting were given different values.
    """
    by_name = {f.name: f for f in settings(cls)}
    given_by: dict[str, dict[str, str]] = getattr(ns, GIVEN_BY, None) or {}
    for name, texts in given_by.items():
        if name not in by_name:
            continue
        # Parsed here too, so that a bad value is reported by the name the user typed.
        first: tuple[str, str, Any] | None = None
        for option, text in texts.items():
            value = parse_text(by_name[name], option, text)
            if first is None:
                first = (option, text, value)
            elif value != first[2]:
                raise conflict(first[0], first[1], option, text)
    return {k: v for k, v in vars(ns).items() if k in by_name}
