"""How any settings class is read (pipeline/config/declare.py, loading.py, flags.py), on a
made-up settings class: names and aliases, fallbacks, conflicts, flags, and the way back to
the environment. Tessera's own declarations are checked in test_config_dropin.py."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from pipeline.config import declare, flags, loading, parsers
from pipeline.config.declare import setting
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Toy:
    port: int = setting(
        8080,
        env="TOY_PORT",
        also_env=("OLD_PORT",),
        flag="--port",
        also_flags=("-P",),
        parse=parsers.port,
        help="a port",
    )
    loud: bool = setting(
        False,
        env="TOY_LOUD",
        also_env=("OLD_LOUD",),
        flag="--loud",
        also_flags=("-l",),
        parse=parsers.boolean,
        help="loud",
        group="logging",
    )
    region: str | None = setting(
        None,
        env="TOY_REGION",
        fallback_env=("HOST_REGION",),
        flag=None,
        parse=parsers.optional_str,
        help="a region",
    )


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    flags.add_arguments(parser, Toy)
    return parser.parse_args(argv)


def test_every_name_of_a_setting_reaches_it() -> None:
    assert loading.build(Toy, env={}) == Toy()
    assert loading.build(Toy, env={"TOY_PORT": "1"}).port == 1
    assert loading.build(Toy, env={"OLD_PORT": "2"}).port == 2
    assert loading.build(Toy, env={"OLD_LOUD": "yes"}).loud is True
    assert loading.build(Toy, env={"TOY_PORT": "3", "OLD_PORT": "3"}).port == 3
    # Equal after parsing is equal: "1" and "on" are the same switch.
    assert loading.build(Toy, env={"TOY_LOUD": "1", "OLD_LOUD": "on"}).loud is True


def test_two_names_with_two_values_is_one_line_naming_both() -> None:
    with pytest.raises(ConfigError) as info:
        loading.build(Toy, env={"TOY_PORT": "1", "OLD_PORT": "2"})
    message = str(info.value)
    assert "\n" not in message
    assert "TOY_PORT='1'" in message and "OLD_PORT='2'" in message
    assert "set one of them" in message


def test_a_fallback_stands_in_only_when_no_name_is_set() -> None:
    assert loading.build(Toy, env={"HOST_REGION": "eu"}).region == "eu"
    both = loading.build(Toy, env={"HOST_REGION": "eu", "TOY_REGION": "us"})
    assert both.region == "us"  # no conflict: the fallback means something broader


def test_flags_win_and_each_alias_is_a_flag() -> None:
    ns = _parse("-P", "9", "-l")
    config = loading.build(Toy, env={"TOY_PORT": "1"}, flags=flags.given_flags(ns, Toy))
    assert (config.port, config.loud) == (9, True)
    assert flags.given_flags(_parse(), Toy) == {}


def test_two_flags_of_one_setting_with_two_values_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"-P='1' and --port='2'"):
        flags.given_flags(_parse("-P", "1", "--port", "2"), Toy)
    assert flags.given_flags(_parse("-l", "--loud"), Toy) == {"loud": "true"}
    # One name given twice is argparse's "last wins", not two names.
    assert flags.given_flags(_parse("--port", "1", "--port", "2"), Toy) == {"port": "2"}


def test_a_bad_flag_value_is_named_by_the_flag_typed() -> None:
    with pytest.raises(ConfigError, match=r"^-P='x': not a number$"):
        flags.given_flags(_parse("-P", "x"), Toy)


def test_to_env_writes_every_name_but_fallbacks() -> None:
    config = loading.build(Toy, env={"OLD_PORT": "7", "HOST_REGION": "eu"})
    env = loading.to_env(config)
    assert env == {
        "TOY_PORT": "7",
        "OLD_PORT": "7",
        "TOY_LOUD": "0",
        "OLD_LOUD": "0",
        "TOY_REGION": "eu",
    }
    # A child inheriting a stale alias gets it overwritten, so it cannot contradict.
    child = {"OLD_PORT": "1", **loading.to_env(loading.build(Toy, flags={"port": "5"}))}
    assert loading.build(Toy, env=child).port == 5
    assert loading.to_env(config, groups=("logging",)) == {"TOY_LOUD": "0", "OLD_LOUD": "0"}


def test_env_value_reads_one_setting_without_the_others() -> None:
    env = {"TOY_PORT": "not a port", "HOST_REGION": "eu"}
    assert loading.env_value(Toy, "region", env) == "eu"
    assert loading.env_value(Toy, "region", {}) is None
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        loading.env_value(Toy, "nope", {})


def test_describe_and_the_docs_table_list_every_name() -> None:
    rows = {row["name"]: row for row in declare.describe(Toy)}
    assert rows["port"]["flags"] == "--port, -P" and rows["port"]["envs"] == "TOY_PORT, OLD_PORT"
    assert rows["region"]["envs"] == "TOY_REGION, HOST_REGION (fallback)"
    table = declare.markdown_table(Toy)
    assert "| `--port`, `-P` | `TOY_PORT`, `OLD_PORT` | 8080 | a port |" in table
    assert "|  | `TOY_REGION`, `HOST_REGION` (fallback) | unset | a region |" in table


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"env": "lower_case"}, "UPPER_SNAKE_CASE"),
        ({"also_env": ("ALSO-BAD",)}, "UPPER_SNAKE_CASE"),
        ({"flag": "bad"}, "--kebab-case"),
        ({"flag": None, "also_flags": ("-x",)}, "need a flag"),
    ],
)
def test_a_bad_declaration_fails_at_import(kwargs: dict[str, object], says: str) -> None:
    base: dict[str, object] = {"env": "GOOD", "flag": "--good", "parse": str, "help": "h"}
    with pytest.raises(ValueError, match=says):
        setting(None, **{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "normal", "size"),
    [("1920x1080", "1920x1080", (1920, 1080)), (" 1280X720 ", "1280x720", (1280, 720)),
     ("off", "off", None), ("0", "off", None), ("none", "off", None)],
)  # fmt: skip
def test_size_box(text: str, normal: str, size: tuple[int, int] | None) -> None:
    assert parsers.size_box(text) == normal
    assert parsers.box(text) == size


@pytest.mark.parametrize("text", ["1920", "1920x", "x1080", "8x8", "1920x99999", "big"])
def test_size_box_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="WIDTHxHEIGHT|16 to 16384"):
        parsers.size_box(text)
