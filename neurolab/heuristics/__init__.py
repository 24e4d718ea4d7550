"""science.md's arithmetic heuristics: the family registry (:mod:`.families`), digit patterns (:mod:`.patterns`) and
the neuron classifier (:mod:`.classifier`)."""

from .classifier import COLUMNS, Heuristic, classify, matches, static_heuristics
from .families import DIRECT_FAMILIES, FAMILIES, GROUPS, REGISTRY, Family, parse

__all__ = ["COLUMNS", "DIRECT_FAMILIES", "FAMILIES", "GROUPS", "REGISTRY", "Family", "Heuristic", "classify",
           "matches", "parse", "static_heuristics"]
