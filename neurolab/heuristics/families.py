"""The heuristic families of ``../shared/science.md`` (part A, "Classifying a neuron"), in one registry.

Each family says once how its heuristics are named (params -> name), how a name reads back (name -> params), and
which prompts satisfy a heuristic (its matching set). The classifier names and builds heuristics through these
entries and the value lens reads stored names back through them, so a name means the same thing everywhere; a new
family is one entry here plus the k rule that enumerates it in :func:`neurolab.heuristics.classifier.static_heuristics`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Params = dict[str, Any]
#: what a value (op1, op2 or result; any shape) must satisfy
Predicate = Callable[[np.ndarray], np.ndarray]
#: how each param is read back from its text in a name; the rest stay text (``of``, ``pattern``)
_PARAM_TYPES: dict[str, Callable[[str], Any]] = {"operand": int, "m": int, "n": int, "lo": int, "hi": int,
                                                 "values": json.loads}


@dataclass(frozen=True)
class Family:
    """One heuristic family: its display group, whether it is direct, and its names and rule.

    ``syntax`` is a regular expression whose named groups are the params; ``format`` writes the canonical name.
    :meth:`parse` accepts only names that ``format`` writes, so a name cannot disagree with its params (``value`` vs
    ``pattern``, a multi-value's count, ``op1_03mod7``). ``reads`` names the values the rule tests (op1, op2, result);
    every one of them must pass ``test`` (both operands: ``both_operands_*``), or, where ``test`` is None, they
    must be equal (``same_operand``).
    """

    name: str
    group: str
    direct: bool
    syntax: re.Pattern[str]
    format: Callable[[Params], str]
    reads: Callable[[Params], tuple[str, ...]]
    test: Callable[[Params, np.ndarray], np.ndarray] | None

    def parse(self, name: str) -> Params | None:
        """The params of a canonical name of this family, else None."""
        found = self.syntax.fullmatch(name)
        if found is None:
            return None
        params = {key: _PARAM_TYPES.get(key, str)(text) for key, text in found.groupdict().items()}
        return params if self.format(params) == name else None

    def matching_set(self, params: Params, op1: np.ndarray, op2: np.ndarray, result: np.ndarray) -> np.ndarray:
        """Bool [P]: which prompts (one per element of op1, op2, result) satisfy the heuristic."""
        grid = {"op1": op1, "op2": op2, "result": result}
        values = [np.asarray(grid[of]) for of in self.reads(params)]
        if self.test is None:
            return values[0] == values[1]
        return np.logical_and.reduce([self.test(params, v) for v in values])

    def result_predicate(self, params: Params) -> Predicate | None:
        """What the result must satisfy, for a heuristic about the result alone (None for any other)."""
        if self.test is None or self.reads(params) != ("result",):
            return None
        test = self.test
        return lambda v: test(params, np.asarray(v))


def _mod(p: Params, v: np.ndarray) -> np.ndarray:
    return v % p["n"] == p["m"]


def _range(p: Params, v: np.ndarray) -> np.ndarray:
    return (p["lo"] <= v) & (v < p["hi"])


def _digits(p: Params, v: np.ndarray) -> np.ndarray:
    """Written with 3 digits, ``v`` has every digit the pattern keeps (``.`` is any digit)."""
    return np.logical_and.reduce([v // 10 ** (2 - i) % 10 == int(d) for i, d in enumerate(p["pattern"]) if d != "."])


def _pattern_name(p: Params) -> str:
    """``op1_pattern_.2.``, or ``op1_value_123`` for a pattern that keeps every digit."""
    return f"{p['of']}_{'pattern' if '.' in p['pattern'] else 'value'}_{p['pattern']}"


def _operand(p: Params) -> tuple[str, ...]:
    return (f"op{p['operand']}",)


def _both(p: Params) -> tuple[str, ...]:
    return ("op1", "op2")


def _result(p: Params) -> tuple[str, ...]:
    return ("result",)


_PATTERN = r"_(?:value|pattern)_(?P<pattern>(?=[\d.]*\d)[\d.]{3})"  # 3 digits or dots, at least one digit

REGISTRY: dict[str, Family] = {family.name: family for family in (
    Family("operand_mod", "modulo", False, re.compile(r"op(?P<operand>[12])_(?P<m>\d+)mod(?P<n>\d+)"),
           lambda p: f"op{p['operand']}_{p['m']}mod{p['n']}", _operand, _mod),
    Family("both_mod", "modulo", False, re.compile(r"both_operands_(?P<m>\d+)mod(?P<n>\d+)"),
           lambda p: f"both_operands_{p['m']}mod{p['n']}", _both, _mod),
    Family("result_mod", "modulo", True, re.compile(r"result_(?P<m>\d+)mod(?P<n>\d+)"),
           lambda p: f"result_{p['m']}mod{p['n']}", _result, _mod),
    Family("operand_range", "range", False, re.compile(r"op(?P<operand>[12])_range_(?P<lo>\d+)_(?P<hi>\d+)"),
           lambda p: f"op{p['operand']}_range_{p['lo']}_{p['hi']}", _operand, _range),
    Family("both_range", "range", False, re.compile(r"both_operands_range_(?P<lo>\d+)_(?P<hi>\d+)"),
           lambda p: f"both_operands_range_{p['lo']}_{p['hi']}", _both, _range),
    Family("result_range", "range", True, re.compile(r"result_range_(?P<lo>\d+)_(?P<hi>\d+)"),
           lambda p: f"result_range_{p['lo']}_{p['hi']}", _result, _range),
    Family("operand_pattern", "pattern", False, re.compile(r"(?P<of>op[12])" + _PATTERN), _pattern_name,
           lambda p: (p["of"],), _digits),
    Family("result_pattern", "pattern", True, re.compile(r"(?P<of>result)" + _PATTERN), _pattern_name, _result,
           _digits),
    Family("same_operand", "other", False, re.compile("same_operand"), lambda p: "same_operand", _both, None),
    Family("multi_value", "other", True, re.compile(r"result_multi_value_\d+=(?P<values>\[\d+(?:, \d+)*\])"),
           lambda p: f"result_multi_value_{len(p['values'])}={json.dumps([int(v) for v in p['values']])}", _result,
           lambda p, v: np.isin(v, p["values"])),
)}
FAMILIES: tuple[str, ...] = tuple(REGISTRY)
#: science.md's display groups (a full-value pattern such as ``result_value_123`` is a pattern)
GROUPS: dict[str, str] = {name: family.group for name, family in REGISTRY.items()}
#: result heuristics: the neuron's value vector can write the answer itself; the others act through later layers
DIRECT_FAMILIES: frozenset[str] = frozenset(name for name, family in REGISTRY.items() if family.direct)


def parse(name: str) -> tuple[Family, Params] | None:
    """The family and params of a heuristic name, or None for a name no family writes."""
    for family in REGISTRY.values():
        params = family.parse(name)
        if params is not None:
            return family, params
    return None
