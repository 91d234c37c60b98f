"""UrlDsl: every documented example with its exact expansion, the errors, the CLI and
hypothesis properties (product rule, only UrlDslError, escaping round-trips).

The examples marked "original" come from the original UrlDsl description (the Cloud
Multiview README); the others from the Tessera issue.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import urldsl
from urldsl import (
    DEFAULT_MAX_STREAMS,
    Stream,
    UrlDslError,
    count,
    escape,
    expand,
    expand_all,
    parse,
    sources,
)

# No example database: the suite must not write files into the checkout.
_PROPERTY = settings(database=None, deadline=None, max_examples=150)


def pairs(streams: list[Stream]) -> list[tuple[str, str]]:
    return [(stream.url, stream.name) for stream in streams]


def urls(pattern: str) -> list[str]:
    return [stream.url for stream in expand(pattern)]


def names(pattern: str) -> list[str]:
    return [stream.name for stream in expand(pattern)]


# --- examples ------------------------------------------------------------------------


def test_original_18_stream_example() -> None:
    pattern = "https://mystream.xyz/{MEL,SYD,BRI,ADE,PER,ABC}[n,npre=PRI-]{1,2,3}[n]/master.m3u8"
    assert pairs(expand(pattern)) == [
        ("https://mystream.xyz/MEL1/master.m3u8", "PRI-MEL1"),
        ("https://mystream.xyz/MEL2/master.m3u8", "PRI-MEL2"),
        ("https://mystream.xyz/MEL3/master.m3u8", "PRI-MEL3"),
        ("https://mystream.xyz/SYD1/master.m3u8", "PRI-SYD1"),
        ("https://mystream.xyz/SYD2/master.m3u8", "PRI-SYD2"),
        ("https://mystream.xyz/SYD3/master.m3u8", "PRI-SYD3"),
        ("https://mystream.xyz/BRI1/master.m3u8", "PRI-BRI1"),
        ("https://mystream.xyz/BRI2/master.m3u8", "PRI-BRI2"),
        ("https://mystream.xyz/BRI3/master.m3u8", "PRI-BRI3"),
        ("https://mystream.xyz/ADE1/master.m3u8", "PRI-ADE1"),
        ("https://mystream.xyz/ADE2/master.m3u8", "PRI-ADE2"),
        ("https://mystream.xyz/ADE3/master.m3u8", "PRI-ADE3"),
        ("https://mystream.xyz/PER1/master.m3u8", "PRI-PER1"),
        ("https://mystream.xyz/PER2/master.m3u8", "PRI-PER2"),
        ("https://mystream.xyz/PER3/master.m3u8", "PRI-PER3"),
        ("https://mystream.xyz/ABC1/master.m3u8", "PRI-ABC1"),
        ("https://mystream.xyz/ABC2/master.m3u8", "PRI-ABC2"),
        ("https://mystream.xyz/ABC3/master.m3u8", "PRI-ABC3"),
    ]
    assert count(pattern) == 18


def test_original_plain_urls_param() -> None:
    # /create?urls=abc&urls=def: plain URLs are patterns without groups.
    assert pairs(expand_all(["abc", "def"])) == [("abc", ""), ("def", "")]


def test_original_multiplicative() -> None:
    # The original lists "a1 b1 c1 a2 b2 c3" (sic), which contradicts its own 18-stream
    # example; the issue settles the order: the first group is the outermost loop.
    assert urls("{a,b,c}[m]{1,2}[m]") == ["a1", "a2", "b1", "b2", "c1", "c2"]


def test_multiplicative_is_the_default() -> None:
    assert urls("{a,b,c}{1,2}") == urls("{a,b,c}[m]{1,2}[m]")


def test_original_element_wise() -> None:
    assert urls("{a,b}[e]{1,2}[e]") == ["a1", "b2"]


def test_original_mixed_element_wise_and_multiplicative() -> None:
    assert urls("{a,b,c}[e]{-a,-b}[m]{1,2,3}[e]") == [
        "a-a1",
        "a-b1",
        "b-a2",
        "b-b2",
        "c-a3",
        "c-b3",
    ]


def test_element_wise_index_is_outermost_even_after_multiplicative_groups() -> None:
    assert urls("{x,y}{a,b}[e]") == ["xa", "ya", "xb", "yb"]


def test_single_element_wise_group() -> None:
    assert urls("{a,b}[e]") == ["a", "b"]


def test_issue_multiplicative_order() -> None:
    assert pairs(expand("https://s.xyz/{MEL,SYD}[n]{1,2}[n]/m.m3u8")) == [
        ("https://s.xyz/MEL1/m.m3u8", "MEL1"),
        ("https://s.xyz/MEL2/m.m3u8", "MEL2"),
        ("https://s.xyz/SYD1/m.m3u8", "SYD1"),
        ("https://s.xyz/SYD2/m.m3u8", "SYD2"),
    ]


def test_original_n() -> None:
    assert pairs(expand("https://h/{A,B}[n]/x")) == [("https://h/A/x", "A"), ("https://h/B/x", "B")]


def test_original_nc() -> None:
    assert pairs(expand("{mel,Syd}[n,nc]")) == [("mel", "MEL"), ("Syd", "SYD")]


def test_original_nl() -> None:
    assert pairs(expand("{MEL,Syd}[n,nl]")) == [("MEL", "mel"), ("Syd", "syd")]


def test_original_npre() -> None:
    assert pairs(expand("{A,B}[n,npre=Stream-]")) == [("A", "Stream-A"), ("B", "Stream-B")]


def test_original_npost() -> None:
    assert pairs(expand("{A,B}[n,npost=-SYD]")) == [("A", "A-SYD"), ("B", "B-SYD")]


def test_original_npre_and_npost_together() -> None:
    assert pairs(expand("{A,B}[n,npre=Stream-,npost=-SYD]")) == [
        ("A", "Stream-A-SYD"),
        ("B", "Stream-B-SYD"),
    ]


def test_case_applies_to_the_value_not_to_npre_or_npost() -> None:
    assert names("{a}[n,nc,npre=pre-,npost=-post]") == ["pre-A-post"]


def test_original_norder() -> None:
    assert pairs(expand("{A,B}[n,norder=1]{Stream-}[n,norder=0]")) == [
        ("AStream-", "Stream-A"),
        ("BStream-", "Stream-B"),
    ]


def test_norder_parts_come_first_then_pattern_order() -> None:
    pattern = "{a}[n]{b}[n,norder=5]{c}[n]{d}[n,norder=-1]{e}[n,norder=5]"
    assert names(pattern) == ["dbeac"]


def test_original_dnr() -> None:
    assert pairs(expand("{My Stream!}[n,dnr]https://mystream.xyz/")) == [
        ("https://mystream.xyz/", "My Stream!")
    ]


def test_dnr_group_still_counts_so_a_tile_can_be_shown_twice() -> None:
    streams = expand("{1,2}[dnr]https://h/a.m3u8")
    assert pairs(streams) == [("https://h/a.m3u8", ""), ("https://h/a.m3u8", "")]
    assert sources(streams) == ["https://h/a.m3u8"]


def test_no_n_group_gives_empty_names() -> None:
    assert names("https://h/{a,b}") == ["", ""]


def test_options_are_case_insensitive_and_trimmed_around_commas() -> None:
    assert pairs(expand("{a,b}[ N , NPRE=x- ,Norder = 2]")) == [("a", "x-a"), ("b", "x-b")]


def test_spaces_in_values_and_option_values_are_kept() -> None:
    assert pairs(expand("{ a , b }[n,npre= < ]")) == [(" a ", " < a "), (" b ", " < b ")]


def test_ipv6_host_needs_no_escaping() -> None:
    assert urls("http://[::1]:8080/{a,b}") == ["http://[::1]:8080/a", "http://[::1]:8080/b"]


def test_brackets_are_literal_inside_values() -> None:
    assert urls("http://{[::1],[::2]}/x") == ["http://[::1]/x", "http://[::2]/x"]


def test_escapes() -> None:
    assert urls(r"a\{b\}c\[d\]e\,f\\g{x\,y,z\}}\[n]") == [
        r"a{b}c[d]e,f\gx,y[n]",
        r"a{b}c[d]e,f\gz}[n]",
    ]


def test_backslash_before_an_ordinary_character_is_literal() -> None:
    assert urls("a\\b{c\\d}\\") == ["a\\bc\\d\\"]


def test_escapes_in_option_values_and_values_containing_equals() -> None:
    assert names(r"{x}[n,npre=a\,b\]=c]") == ["a,b]=cx"]


def test_empty_values_are_allowed_with_a_comma() -> None:
    assert urls("https://h/s{,-backup}.m3u8") == ["https://h/s.m3u8", "https://h/s-backup.m3u8"]


def test_empty_and_repeated_option_entries() -> None:
    assert pairs(expand("{a}[]{b}[n,,n,]")) == [("ab", "b")]


def test_several_patterns_concatenate_and_keep_duplicates() -> None:
    streams = expand_all(["https://h/{a,b}[n]", "https://h/a"])
    assert pairs(streams) == [("https://h/a", "a"), ("https://h/b", "b"), ("https://h/a", "")]
    assert sources(streams) == ["https://h/a", "https://h/b"]


def test_expand_all_of_nothing_is_nothing() -> None:
    assert expand_all([]) == []


def test_stream_is_a_frozen_struct() -> None:
    stream = expand("https://h/x")[0]
    assert stream == Stream(url="https://h/x", name="")
    with pytest.raises(AttributeError):
        stream.url = "other"  # type: ignore[misc]


def test_parse_exposes_the_tree() -> None:
    tree = parse("https://h/{a,b}[n,e]x")
    assert [type(part).__name__ for part in tree.parts] == ["Text", "Group", "Text"]
    group = tree.groups[0]
    assert group.values == ("a", "b")
    assert group.column == 11
    assert group.options.mode == "e"
    assert group.options.named


def test_public_names() -> None:
    assert DEFAULT_MAX_STREAMS == 64
    for name in ("Stream", "UrlDslError", "expand", "expand_all", "parse", "count", "escape"):
        assert name in urldsl.__all__


# --- cap -----------------------------------------------------------------------------


def _numbers(n: int) -> str:
    return "{" + ",".join(str(i) for i in range(n)) + "}"


def test_cap_refuses_a_million_streams_with_the_count() -> None:
    with pytest.raises(UrlDslError) as caught:
        expand(_numbers(1000) + _numbers(1000))
    assert str(caught.value) == (
        "pattern expands to more than 64 streams (1000000; the group at column 1 passes the"
        " cap): split it or raise the cap (max_streams)"
    )


def test_cap_points_at_the_group_that_passes_it() -> None:
    pattern = "https://h/{a,b,c,d}{1,2,3,4}{x,y,z,w,v}"
    with pytest.raises(UrlDslError) as caught:
        expand(pattern)
    assert caught.value.column == pattern.index("{x") + 1
    assert "(80;" in str(caught.value)


def test_cap_is_exact_and_configurable() -> None:
    assert len(expand(_numbers(8) + _numbers(8))) == 64
    with pytest.raises(UrlDslError):
        expand(_numbers(5) + _numbers(13))
    assert len(expand(_numbers(5) + _numbers(13), max_streams=65)) == 65
    with pytest.raises(UrlDslError):
        expand("https://h/{a,b}", max_streams=1)


def test_cap_counts_element_wise_groups_once() -> None:
    assert len(expand(_numbers(64) + "[e]" + _numbers(64) + "[e]")) == 64


def test_cap_of_a_huge_count_names_its_magnitude() -> None:
    with pytest.raises(UrlDslError) as caught:
        expand("{a,b}" * 1000)
    assert "(at least 10^301;" in str(caught.value)
    assert count("{a,b}" * 1000) == 2**1000


def test_cap_applies_to_the_total_of_expand_all() -> None:
    patterns = ["https://h/" + _numbers(40), "https://h/" + _numbers(30)]
    with pytest.raises(UrlDslError) as caught:
        expand_all(patterns)
    error = caught.value
    assert str(error).startswith("pattern 2: patterns expand to more than 64 streams in total (70;")
    assert error.index == 1
    assert error.pattern == patterns[1]
    assert len(expand_all(patterns, max_streams=70)) == 70


def test_syntax_errors_win_over_the_cap() -> None:
    with pytest.raises(UrlDslError, match="pattern 2: unclosed"):
        expand_all([_numbers(1000), "{a"])


def test_cap_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_streams must be at least 1"):
        expand("x", max_streams=0)


# --- errors --------------------------------------------------------------------------

ERRORS = [
    ("https://h/{a,b", 11, "unclosed '{' at column 11: add '}' to close the group"),
    ("{a}[n,e", 4, "unclosed '[' at column 4: add ']'"),
    ("{a}[n{b}[n]", 4, "unclosed '[' at column 4"),
    ("https://h/a}", 12, "'}' without '{' at column 12: remove it or write a literal '}'"),
    ("x{}y", 2, "empty group '{}' at column 2"),
    ("{a,{b}}", 4, "'{' inside the group opened at column 1 at column 4: groups do not nest"),
    ("{a}[n,bogus]", 7, "unknown option 'bogus' at column 7: valid options are m, e, n"),
    ("{a}[::1]", 5, "a literal '[' right after a group is written '\\['"),
    ("{a}[m,e]", 7, "'m' and 'e' both given at column 7"),
    ("{a}[n,nc,nl]", 10, "'nc' and 'nl' both given at column 10"),
    ("{a}[n,norder=x]", 7, "norder is not a whole number ('x') at column 7"),
    ("{a}[n,norder=1.5]", 7, "norder is not a whole number"),
    ("{a}[n,norder=1234567890]", 7, "at most 9 digits"),
    ("{a}[n,norder]", 7, "option 'norder' needs a value at column 7: write norder=1"),
    ("{a}[n,npre]", 7, "option 'npre' needs a value at column 7: write npre=TEXT"),
    ("{a}[n=1]", 5, "option 'n' takes no value at column 5"),
    ("{a}[n,npre=x,npre=y]", 14, "option 'npre' given twice (first at column 7) at column 14"),
    ("{a}[nc]", 5, "option 'nc' shapes the display name but the group is not in it"),
    ("{a}[dnr,npost=x]", 9, "option 'npost' shapes the display name"),
    ("", 1, "empty pattern at column 1"),
    (
        "{a,b,c}[e]{-a,-b}[m]{1,2}[e]",
        21,
        "element-wise groups differ in length: {a,b,c} at column 1 has 3 values,"
        " {1,2} at column 21 has 2: give every [e] group the same number of values",
    ),
]


@pytest.mark.parametrize(("pattern", "column", "fragment"), ERRORS)
def test_error_names_problem_and_column(pattern: str, column: int, fragment: str) -> None:
    with pytest.raises(UrlDslError) as caught:
        expand(pattern)
    error = caught.value
    assert fragment in str(error)
    assert error.column == column
    assert f"at column {column}" in str(error)
    assert "\n" not in str(error)
    assert error.pattern == pattern


def test_caret_sits_under_the_column() -> None:
    with pytest.raises(UrlDslError) as caught:
        expand("https://h/{a,b")
    assert caught.value.render() == (
        "unclosed '{' at column 11: add '}' to close the group\nhttps://h/{a,b\n          ^"
    )


def test_caret_windows_a_long_pattern() -> None:
    pattern = "x" * 500 + "}" + "y" * 500
    with pytest.raises(UrlDslError) as caught:
        expand(pattern)
    shown, caret = caught.value.caret().split("\n")
    assert len(shown) < 100
    assert shown[caret.index("^")] == "}"


def test_caret_keeps_non_printable_characters_one_column_wide() -> None:
    with pytest.raises(UrlDslError) as caught:
        expand("a\tb\n}")
    shown, caret = caught.value.caret().split("\n")
    assert shown == "a?b?}"
    assert caret == "    ^"


def test_error_survives_pickling() -> None:
    with pytest.raises(UrlDslError) as caught:
        expand_all(["x", "{a"])
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.message, copy.column, copy.pattern, copy.index) == (
        caught.value.message,
        1,
        "{a",
        1,
    )


def test_error_is_a_value_error() -> None:
    assert issubclass(UrlDslError, ValueError)


# --- CLI -----------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "urldsl", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )


def test_cli_prints_one_json_object_per_stream() -> None:
    done = run_cli("https://s.xyz/{MEL,SYD}[n]{1,2}[n]/m.m3u8", "https://s.xyz/{é}[n,nc]")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"url": "https://s.xyz/MEL1/m.m3u8", "name": "MEL1"},
        {"url": "https://s.xyz/MEL2/m.m3u8", "name": "MEL2"},
        {"url": "https://s.xyz/SYD1/m.m3u8", "name": "SYD1"},
        {"url": "https://s.xyz/SYD2/m.m3u8", "name": "SYD2"},
        {"url": "https://s.xyz/é", "name": "É"},
    ]


def test_cli_error_exits_2_with_message_and_caret() -> None:
    done = run_cli("https://h/{a,b")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "unclosed '{' at column 11: add '}' to close the group",
        "https://h/{a,b",
        "          ^",
    ]


def test_cli_max_streams_flag() -> None:
    assert run_cli("--max-streams", "3", "{a,b}{1,2}").returncode == 2
    done = run_cli("--max-streams", "4", "{a,b}{1,2}")
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 4


def test_cli_help() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    assert "--max-streams" in done.stdout


# --- properties ----------------------------------------------------------------------

_values = st.lists(st.text(max_size=4), min_size=1, max_size=3)
_literal = st.text(max_size=4)


@st.composite
def group_structures(
    draw: st.DrawFn,
) -> tuple[str, list[tuple[list[str], str]], list[str], int]:
    """A pattern built from escaped parts, its groups (values, mode), its literals, and
    the element-wise length."""
    element_length = draw(st.integers(min_value=1, max_value=3))
    groups: list[tuple[list[str], str]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if draw(st.booleans()):
            values = draw(
                st.lists(st.text(max_size=3), min_size=element_length, max_size=element_length)
            )
            groups.append((values, "e"))
        else:
            groups.append((draw(_values), "m"))
    literals = [draw(_literal) for _ in range(len(groups) + 1)]
    if not groups and not literals[0]:
        literals[0] = "x"
    pieces = [escape(literals[0])]
    for (values, mode), literal in zip(groups, literals[1:], strict=True):
        if values == [""]:
            values[0] = "v"
        options = draw(st.sampled_from(["", "[]", "[n]", "[ N ]", "[n,nc]"]))
        options = f"[{mode}]" if mode == "e" or draw(st.booleans()) else options
        pieces.append("{" + ",".join(escape(value) for value in values) + "}" + options)
        pieces.append(escape(literal))
    return "".join(pieces), groups, literals, element_length


@_PROPERTY
@given(group_structures())
def test_count_follows_the_product_rule(
    structure: tuple[str, list[tuple[list[str], str]], list[str], int],
) -> None:
    pattern, groups, literals, element_length = structure
    expected = element_length if any(mode == "e" for _, mode in groups) else 1
    for values, mode in groups:
        if mode == "m":
            expected *= len(values)
    assert count(pattern) == expected
    streams = expand(pattern, max_streams=expected)
    assert len(streams) == expected
    if expected > 1:
        with pytest.raises(UrlDslError):
            expand(pattern, max_streams=expected - 1)

    # Reference order: element-wise index outermost, then multiplicative groups in order.
    multiplicative = [index for index, (_, mode) in enumerate(groups) if mode == "m"]
    reference: list[str] = []
    for element in range(element_length if any(m == "e" for _, m in groups) else 1):
        for choice in product(*(range(len(groups[index][0])) for index in multiplicative)):
            chosen = dict(zip(multiplicative, choice, strict=True))
            url = literals[0]
            for index, ((values, _), literal) in enumerate(zip(groups, literals[1:], strict=True)):
                url += values[chosen.get(index, element)] + literal
            reference.append(url)
    assert [stream.url for stream in streams] == reference


_tokens = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ",",
        "\\",
        "=",
        " ",
        "n",
        "e",
        "m",
        "nc",
        "nl",
        "dnr",
        "npre=",
        "npost=",
        "norder=",
        "1",
        "-2",
        "a",
        "x:",
        "\n",
        "é",
    ]
)
_noise = st.one_of(st.text(max_size=30), st.lists(_tokens, max_size=30).map("".join))


@_PROPERTY
@given(_noise)
def test_expanding_random_text_raises_only_url_dsl_error(pattern: str) -> None:
    try:
        streams = expand(pattern)
    except UrlDslError as error:
        message = str(error)
        assert "\n" not in message
        assert f"at column {error.column}" in message
        assert 1 <= error.column <= len(pattern) + 1
        shown, caret = error.caret().split("\n")
        assert len(caret) == caret.index("^") + 1
        assert caret.index("^") <= len(shown)
    else:
        assert 1 <= len(streams) <= DEFAULT_MAX_STREAMS
        assert len(streams) == count(pattern)


@_PROPERTY
@given(st.text(min_size=1))
def test_escaped_text_expands_to_itself(text: str) -> None:
    assert expand(escape(text)) == [Stream(url=text, name="")]


@_PROPERTY
@given(st.lists(st.text(), min_size=2, max_size=5))
def test_escaped_values_expand_to_themselves(values: list[str]) -> None:
    pattern = "{" + ",".join(escape(value) for value in values) + "}[n]"
    assert pairs(expand(pattern)) == [(value, value) for value in values]


@_PROPERTY
@given(st.text().filter(lambda text: text == text.strip()))
def test_escaped_option_values_round_trip(text: str) -> None:
    assert names("{x}[n,npre=" + escape(text) + ",npost=" + escape(text) + "]") == [
        text + "x" + text
    ]
