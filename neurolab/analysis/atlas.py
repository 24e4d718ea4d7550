"""The Heuristic Atlas: classified neurons of a model as one table, filtered and searched like a user thinks."""

from __future__ import annotations

import re

import pandas as pd

from ..heuristics import RULES_VERSION
from ..store import Store

COLUMNS = ["op", "layer", "neuron", "label", "heuristic", "score", "base_rate", "lift", "grp", "direct", "side",
           "importance_rank", "maps", "template", "max_op", "intervention", "params"]


def atlas(store: Store, fingerprint: str, matched_only: bool = True) -> pd.DataFrame:
    """Every stored classification of a model, one row per (operator, neuron, heuristic), best scores first."""
    frame = store.atlas_rows(fingerprint, RULES_VERSION, matched_only)
    frame["label"] = "L" + frame["layer"].astype(str) + "N" + frame["neuron"].astype(str)
    return frame[COLUMNS]


def normalise_query(text: str) -> str:
    """``"result 0 mod 10"`` -> ``result_0mod10``; ``"op1 range 100-150"`` -> ``op1_range_100_150``."""
    text = text.strip().lower()
    text = re.sub(r"\s*mod\s*", "mod", text)
    text = re.sub(r"(\d+)\s*(?:-|\.\.|to)\s*(\d+)", r"\1_\2", text)
    text = re.sub(r"\s+", "_", text)
    return text.replace("same_operands", "same_operand")


def search(frame: pd.DataFrame, text: str) -> pd.DataFrame:
    """Rows whose heuristic name contains the normalised query (every word of it, in order)."""
    if not text.strip():
        return frame
    needle = normalise_query(text)
    return frame[frame["heuristic"].str.contains(re.escape(needle), regex=True)]


def counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Neurons with at least one heuristic, per operator, layer and display group (a neuron counts once per group)."""
    return (frame.groupby(["op", "layer", "grp"])["neuron"].nunique().rename("neurons").reset_index())
