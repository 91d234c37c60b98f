"""How many streams a pattern makes, computed without expanding it.

The product rule: the length shared by the element-wise groups (1 if there are none)
times the length of every multiplicative group. A group of one value, literal text and
``dnr`` change nothing; ``dnr`` groups still count.

Checking a cap multiplies left to right and stops as soon as the running product passes
it, so refusing even ``{1,...,1000}{1,...,1000}`` costs a handful of multiplications.
"""

from __future__ import annotations

from urldsl.nodes import Group, Pattern
from urldsl.parser import parse

__all__ = ["count", "describe", "first_over"]

# Counts below this are shown exactly in messages; above it only their order of magnitude,
# because int -> str is quadratic and refused by Python past 4300 digits.
_EXACT_BELOW = 10**18
_LOG10_2 = 0.30102999566398120


def _factors(pattern: Pattern) -> list[tuple[int, Group]]:
    """The loop lengths in loop order: the element-wise loop, then multiplicative groups."""
    factors: list[tuple[int, Group]] = []
    groups = pattern.groups
    element_wise = next((group for group in groups if group.options.mode == "e"), None)
    if element_wise is not None:
        factors.append((len(element_wise.values), element_wise))
    factors.extend((len(group.values), group) for group in groups if group.options.mode == "m")
    return factors


def count(pattern: str | Pattern) -> int:
    """The exact number of streams ``pattern`` expands to, without expanding it.

    Raises:
        UrlDslError: ``pattern`` is a malformed string.
    """
    parsed = parse(pattern) if isinstance(pattern, str) else pattern
    numbers = [length for length, _ in _factors(parsed)]
    # Pairwise (tree) multiplication keeps a product of thousands of factors fast: the
    # left-to-right product would be quadratic in the size of the result.
    while len(numbers) > 1:
        paired = [a * b for a, b in zip(numbers[::2], numbers[1::2], strict=False)]
        if len(numbers) % 2:
            paired.append(numbers[-1])
        numbers = paired
    return numbers[0] if numbers else 1


def first_over(pattern: Pattern, budget: int) -> int | None:
    """The column at which the stream count passes ``budget``, or None if it does not.

    The column is that of the group whose length takes the running product past the
    budget (column 1 if even one stream is too many), for the caret in the error.
    """
    if budget < 1:
        return 1
    running = 1
    for length, group in _factors(pattern):
        running *= length
        if running > budget:
            return group.column
    return None


def describe(number: int) -> str:
    """``number`` for a message: exact when short, else ``at least 10^K``."""
    if number < _EXACT_BELOW:
        return str(number)
    # 2**(bits-1) <= number, so 10**floor((bits-1) * log10(2)) is a true lower bound.
    return f"at least 10^{int((number.bit_length() - 1) * _LOG10_2)}"
