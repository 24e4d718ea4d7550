"""The operand grid rules of science.md and the prompt parser."""

from __future__ import annotations

import pytest

from neurolab.tasks.arithmetic import PromptError, answer, parse_prompt, valid_pairs


@pytest.mark.parametrize("op, count", [("+", 10_000), ("-", 5_050), ("*", 3_390), ("/", 9_900)])
def test_grid_sizes_match_the_measured_ones(op, count):
    # ../shared/embedded-model.md: + 10,000 pairs, - 5,050, * 3,390 with a*b <= 999, / 9,900
    assert len(valid_pairs(op, 100, 999)) == count


def test_single_token_limit_shrinks_the_grid():
    pairs = valid_pairs("+", 300, 520)  # e.g. GPT-J: numbers up to 520 are single tokens
    assert all(a + b < 520 for a, b in pairs)
    assert (299, 220) in pairs and (299, 221) not in pairs
    assert all(a * b <= 520 for a, b in valid_pairs("*", 300, 520))
    assert all(b >= 1 for _, b in valid_pairs("/", 50, 999))


def test_answers():
    assert answer(23, "+", 45) == 68 and answer(9, "-", 4) == 5
    assert answer(7, "*", 8) == 56 and answer(17, "/", 5) == 3


@pytest.mark.parametrize("text", ["23+45=", " 23 + 45 = ", "7*8="])
def test_parse_accepts(text):
    prompt = parse_prompt(text)
    assert prompt.answer in (68, 56)


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("23+45", "must end with '='"), ("hello", "not an arithmetic prompt"),
    ("5/0=", "division by zero"), ("3-5=", "negative"), ("2^3=", "not an arithmetic prompt"),
])
def test_parse_rejects_with_a_reason(text, message):
    with pytest.raises(PromptError, match=message):
        parse_prompt(text)
