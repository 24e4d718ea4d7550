"""science.md's arithmetic heuristics: the family registry (:mod:`.families`), digit patterns (:mod:`.patterns`) and
the neuron classifier (:mod:`.classifier`)."""

from .classifier import COLUMNS, Heuristic, classify, matches, static_heuristics
from .families import DIRECT_FAMILIES, FAMILIES, GROUPS, REGISTRY, Family, parse

#: bumped whenever a rule changes what the classifier returns; stored results are keyed by it
RULES_VERSION = 2

__all__ = ["COLUMNS", "DIRECT_FAMILIES", "FAMILIES", "GROUPS", "REGISTRY", "RULES_VERSION", "Family", "Heuristic",
           "classify",
           "matches", "parse", "static_heuristics"]
