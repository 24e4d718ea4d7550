"""The Heuristic Atlas: classified neurons of a model as one table, filtered and searched like a user thinks."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..heuristics import RULES_VERSION
from ..store import Store
from .significance import FDR, grouped_q_values

COLUMNS = ["op", "layer", "neuron", "label", "heuristic", "score", "base_rate", "lift", "grp", "direct", "side",
           "importance_rank", "maps", "template", "max_op", "intervention", "params", "p_value", "q_value",
           "significant"]
#: what identifies one classification run: Benjamini-Hochberg corrects over all of its (neuron, heuristic) pairs
RUN = ["op", "template", "max_op", "intervention", "maps", "top_n", "threshold", "n_prompts", "seed"]


def _run_tests(store: Store, fingerprint: str) -> pd.DataFrame:
    """Every test of every run, grouped where identical (run, k, |S|, count), with its p- and q-value; P is the
    sweep's prompt count (``heuristic_scores.n_prompts`` is the importance run's)."""
    groups = store.score_tests(fingerprint, RULES_VERSION, RUN)
    return grouped_q_values(groups, RUN)


def atlas(store: Store, fingerprint: str, matched_only: bool = True, alpha: float = FDR) -> pd.DataFrame:
    """Every stored classification of a model, one row per (operator, neuron, heuristic), best scores first, with
    its hypergeometric ``p_value``, its Benjamini-Hochberg ``q_value`` over every (neuron, heuristic) pair of its
    run (computed here from the stored score, k and base rate: exact, nothing stored), and ``significant`` (matched
    and q <= ``alpha``)."""
    frame = store.atlas_rows(fingerprint, RULES_VERSION, matched_only)
    frame["label"] = "L" + frame["layer"].astype(str) + "N" + frame["neuron"].astype(str)
    tests = _run_tests(store, fingerprint)[[*RUN, "k", "base_rate", "count", "p_value", "q_value"]]
    frame["count"] = np.rint(frame["score"] * frame["k"]).astype("int64")
    frame = frame.merge(tests, on=[*RUN, "k", "base_rate", "count"], how="left", validate="many_to_one")
    frame["significant"] = frame["matched"].astype(bool) & (frame["q_value"] <= alpha)
    return frame[COLUMNS]


def normalise_query(text: str) -> str:
    """``"result 0 mod 10"`` -> ``result_0mod10``; ``"op1 range 100-150"`` -> ``op1_range_100_150``."""
    text = text.strip().lower()
    text = re.sub(r"\s*mod\s*", "mod", text)
    text = re.sub(r"(\d+)\s*(?:-|\.\.|to)\s*(\d+)", r"\1_\2", text)
    text = re.sub(r"\s+", "_", text)
    return text.replace("same_operands", "same_operand")


_LABEL = re.compile(r"l(\d+)(?:n(\d+))?")
_RANGE = re.compile(r"(op1|op2|both_operands|result)_range_(\d+)_(\d+)")


def _matches(frame: pd.DataFrame, text: str) -> pd.Series:
    needle = normalise_query(text)
    label = _LABEL.fullmatch(needle)
    if label:  # a neuron (L3N170) or a layer (L3)
        found = frame["layer"] == int(label.group(1))
        return found & (frame["neuron"] == int(label.group(2))) if label.group(2) else found
    wanted = _RANGE.fullmatch(needle)
    if wanted:  # a range heuristic whose range covers the asked one: "op1 range 50-60" finds op1_range_50_100
        target, lo, hi = wanted.group(1), int(wanted.group(2)), int(wanted.group(3))
        ranges = frame["heuristic"].str.extract(_RANGE.pattern + "$")
        return ((ranges[0] == target) & (ranges[1].astype(float) <= lo) & (ranges[2].astype(float) >= hi)).fillna(
            False).astype(bool)
    found = pd.Series(True, index=frame.index)
    for word in needle.split("_"):  # every word, in any order: "operand same" finds same_operand
        found &= frame["heuristic"].str.contains(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", regex=True)
    return found


def search(frame: pd.DataFrame, text: str) -> pd.DataFrame:
    """Rows matching any of the comma-separated queries: a neuron (``L3N170``) or layer (``L3``); a range, found
    by the heuristics that cover it (``op1 range 50-60``); else heuristic names holding every word of it
    (``result 0 mod 10``, ``same operand``)."""
    queries = [part for part in re.split(r"[,;]", text) if part.strip()]
    if not queries:
        return frame
    found = pd.Series(False, index=frame.index)
    for query in queries:
        found |= _matches(frame, query)
    return frame[found]


def search_hint(frame: pd.DataFrame, text: str) -> str:
    """What to say when a search finds nothing: the heuristics there are, and the forms a query takes."""
    common = ", ".join(frame["heuristic"].value_counts().index[:5]) or "none yet"
    return (f"No classified neuron matches {text.strip()!r} under these filters. The most common heuristics here: "
            f"{common}. A query is a neuron (L3N170) or layer (L3), a range (op1 range 50-60: the heuristics "
            "covering it), or words of a heuristic's name (result 0 mod 10, same operand); several, comma-separated.")


def counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Neurons with at least one heuristic, per operator, layer and display group (a neuron counts once per group),
    and ``significant``: those with at least one of the group's heuristics significant at the FDR (when known)."""
    keys = ["op", "layer", "grp"]
    table = frame.groupby(keys)["neuron"].nunique().rename("neurons").reset_index()
    if "significant" not in frame:
        return table
    chosen = frame[frame["significant"].astype(bool)]
    significant = chosen.groupby(keys)["neuron"].nunique().rename("significant").reset_index()
    table = table.merge(significant, on=keys, how="left")
    return table.assign(significant=table["significant"].fillna(0).astype(int))
