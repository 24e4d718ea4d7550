"""Operand grids: every valid prompt of one operator for one model, rendered through a prompt template.

A template is a small serialisable value (like pyvene's configs): its ``key`` names the results it produced in the
store, so results of different templates never mix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from ..errors import InputError
from .arithmetic import OPERATORS, answer, valid_pairs

FIELDS = ("{op1}", "{op}", "{op2}")


@dataclass(frozen=True)
class PromptTemplate:
    """How one (op1, op, op2) becomes text: a format with the three fields, after ``fewshot`` solved examples."""

    format: str = "{op1}{op}{op2}="
    fewshot: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        missing = [f for f in FIELDS if f not in self.format]
        if missing:
            raise InputError(f"template {self.format!r} lacks {', '.join(missing)}; e.g. '{{op1}} {{op}} {{op2}} ='")
        try:
            self.format.format(op1=1, op="+", op2=2)
        except (KeyError, IndexError, ValueError) as error:
            raise InputError(
                f"template {self.format!r} has a field other than {{op1}} {{op}} {{op2}}: {error}") from None
        if self.fewshot < 0:
            raise InputError("fewshot must be >= 0")

    @property
    def key(self) -> str:
        """Identity in the store: the format plus the few-shot count and seed when there are examples."""
        return self.format if not self.fewshot else f"{self.format}|fewshot={self.fewshot}|seed={self.seed}"

    def prefix(self, op: str, max_op: int, max_single_token: int) -> str:
        """``fewshot`` solved prompts of the same operator (fixed by the seed), each followed by a space."""
        if not self.fewshot:
            return ""
        pairs = valid_pairs(op, max_op, max_single_token)
        rng = random.Random(f"{self.seed}:{op}")
        shots = [pairs[rng.randrange(len(pairs))] for _ in range(self.fewshot)]
        return "".join(self.format.format(op1=a, op=op, op2=b) + f"{answer(a, op, b)} " for a, b in shots)

    def render(self, op1: int, op: str, op2: int, prefix: str = "") -> str:
        return prefix + self.format.format(op1=op1, op=op, op2=op2)


TEMPLATES: dict[str, PromptTemplate] = {
    "plain": PromptTemplate(),
    "spaced": PromptTemplate("{op1} {op} {op2} ="),
    "fewshot": PromptTemplate(fewshot=3),
}


def parse_template(text: str | None) -> PromptTemplate:
    """A preset name (``plain``, ``spaced``, ``fewshot``) or a custom format string with the three fields."""
    if text is None or text in TEMPLATES:
        return TEMPLATES[text or "plain"]
    return PromptTemplate(text)


@dataclass(frozen=True)
class OperandGrid:
    """The valid prompts of one operator for one model, in row-major (op1, op2) order."""

    op: str
    max_op: int
    max_single_token: int
    template: PromptTemplate

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise InputError(f"unknown operator {self.op!r}; use one of {' '.join(OPERATORS)}")
        if not 1 <= self.max_op <= self.max_single_token + 1:
            raise InputError(f"max_op must be in 1..{self.max_single_token + 1} for this model")

    @cached_property
    def pairs(self) -> list[tuple[int, int]]:
        return valid_pairs(self.op, self.max_op, self.max_single_token)

    @cached_property
    def answers(self) -> list[int]:
        return [answer(a, self.op, b) for a, b in self.pairs]

    @cached_property
    def prompts(self) -> list[str]:
        prefix = self.template.prefix(self.op, self.max_op, self.max_single_token)
        return [self.template.render(a, self.op, b, prefix) for a, b in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)
