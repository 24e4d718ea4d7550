"""Arithmetic prompts: the operators, their answers and which operand pairs are valid.

The validity rules are those of ``../shared/science.md`` (part A, "Prompts and the operand grid"): a prompt is
valid only when its answer is a single token, which depends on the model's ``max_single_token``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError

OPERATORS: tuple[str, ...] = ("+", "-", "*", "/")
#: file-name-safe names of the operators
OP_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
DEFAULT_TEMPLATE = "{op1}{op}{op2}="

_PROMPT_RE = re.compile(r"^\s*(\d+)\s*([+\-*/])\s*(\d+)\s*=\s*$")


class PromptError(InputError):
    """A prompt that is not ``<int><op><int>=``; the message says what is wrong."""


def answer(op1: int, op: str, op2: int) -> int:
    """The correct answer; ``/`` is integer division (as in the paper)."""
    if op == "+":
        return op1 + op2
    if op == "-":
        return op1 - op2
    if op == "*":
        return op1 * op2
    if op == "/":
        return op1 // op2
    raise PromptError(f"unknown operator {op!r}; use one of {' '.join(OPERATORS)}")


def is_valid(op1: int, op: str, op2: int, max_op: int, max_single_token: int) -> bool:
    """Whether (op1, op2) is on the operator's grid: operands below ``max_op``, answer a single token."""
    if not (0 <= op1 < max_op and 0 <= op2 < max_op):
        return False
    if op == "+":
        return op2 < min(max_single_token - op1, max_op)  # science.md's rule, verbatim
    if op == "-":
        return op2 <= op1
    if op == "*":
        return op1 == 0 or op2 <= max_single_token // op1
    if op == "/":
        return op2 >= 1
    raise PromptError(f"unknown operator {op!r}; use one of {' '.join(OPERATORS)}")


def valid_pairs(op: str, max_op: int, max_single_token: int) -> list[tuple[int, int]]:
    """Every valid (op1, op2) of one operator, in row-major grid order."""
    return [
        (a, b)
        for a in range(max_op)
        for b in range(max_op)
        if is_valid(a, op, b, max_op, max_single_token)
    ]


@dataclass(frozen=True)
class ArithmeticPrompt:
    """A parsed ``op1 op op2 =`` prompt."""

    op1: int
    op: str
    op2: int

    @property
    def answer(self) -> int:
        return answer(self.op1, self.op, self.op2)

    def text(self, template: str = DEFAULT_TEMPLATE) -> str:
        return template.format(op1=self.op1, op=self.op, op2=self.op2)


def parse_prompt(text: str) -> ArithmeticPrompt:
    """Parse what a user typed (``23+45=``, ``7 * 8 =``) or raise :class:`PromptError` saying why not."""
    if not text or not text.strip():
        raise PromptError("the prompt is empty: type something like 23+45=")
    match = _PROMPT_RE.match(text)
    if match is None:
        hint = " (it must end with '=')" if "=" not in text else ""
        raise PromptError(
            f"{text.strip()!r} is not an arithmetic prompt{hint}: write <number><op><number>= "
            f"with op one of {' '.join(OPERATORS)}, e.g. 23+45="
        )
    op1, op, op2 = int(match.group(1)), match.group(2), int(match.group(3))
    if op == "/" and op2 == 0:
        raise PromptError("division by zero: the second operand of '/' must be at least 1")
    if op == "-" and op2 > op1:
        raise PromptError(f"{op1}-{op2} is negative; the grid only has non-negative answers (op2 <= op1)")
    return ArithmeticPrompt(op1, op, op2)
