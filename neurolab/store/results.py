"""Results computed from a sweep: neuron importance and heuristic scores, each under its complete key.

A sweep already names the model, grid and intervention; an importance run adds its method, prompts and seed; a
classification adds its maps, top-N and threshold, the importance run (prompts, seed) that chose its neurons, and
the version of the classifier's rules (so a rule fix recomputes instead of serving old labels).
"""

from __future__ import annotations

import pandas as pd

#: what a classification's scores are keyed by besides the sweep
SETTINGS = ("maps", "top_n", "threshold", "n_prompts", "seed", "rules")
SCORE_COLUMNS = ["layer", "neuron", "importance_rank", "heuristic", "family", "grp", "direct", "params", "score",
                 "k", "base_rate", "lift", "side", "matched"]


class ResultTables:
    """Mixin of :class:`~neurolab.store.Store`: importance and heuristic scores."""

    def write_importance(self, sweep_id: int, n_prompts: int, seed: int, frame: pd.DataFrame) -> None:
        """Replace one importance run (``frame``: method, layer, neuron, mean, std, score, rank)."""
        rows = frame.assign(sweep_id=sweep_id, n_prompts=n_prompts, seed=seed)[
            ["sweep_id", "method", "n_prompts", "seed", "layer", "neuron", "mean", "std", "score", "rank"]]
        methods = sorted(set(rows["method"]))
        layers = sorted({int(x) for x in rows["layer"]})
        with self.transaction(importance_rows=rows) as con:
            con.execute(
                f"DELETE FROM importance WHERE sweep_id=? AND n_prompts=? AND seed=? AND method IN "
                f"({','.join('?' * len(methods))}) AND layer IN ({','.join(map(str, layers))})",
                [sweep_id, n_prompts, seed, *methods])
            con.execute("INSERT INTO importance SELECT * FROM importance_rows")

    def importance(self, sweep_id: int, method: str, n_prompts: int, seed: int) -> pd.DataFrame:
        """A stored importance run (empty when absent)."""
        with self.cursor() as con:
            return con.execute(
                "SELECT * EXCLUDE (sweep_id) FROM importance WHERE sweep_id=? AND method=? AND n_prompts=? "
                "AND seed=? ORDER BY layer, neuron", [sweep_id, method, n_prompts, seed]).df()

    @staticmethod
    def _classification_key(sweep_id: int, settings: dict) -> tuple[str, list]:
        where = "sweep_id=? AND maps=? AND top_n=? AND threshold=? AND n_prompts=? AND seed=? AND rules=?"
        return where, [sweep_id, *(settings[k] for k in SETTINGS)]

    def write_classification(self, sweep_id: int, settings: dict, layer: int, frame: pd.DataFrame) -> None:
        """Replace one layer's heuristic scores of one classification run, and mark the layer complete.
        ``settings``: maps, top_n, threshold, n_prompts, seed, rules (the classifier's version)."""
        where, key = self._classification_key(sweep_id, settings)
        rows = frame.rename(columns={"group": "grp"}).assign(
            sweep_id=sweep_id, layer=layer, **{k: settings[k] for k in SETTINGS})
        rows = rows[["sweep_id", *SETTINGS, *SCORE_COLUMNS]]
        with self.transaction(score_rows=rows) as con:
            con.execute(f"DELETE FROM heuristic_scores WHERE {where} AND layer=?", [*key, layer])
            con.execute(f"DELETE FROM classification_runs WHERE {where} AND layer=?", [*key, layer])
            con.execute("INSERT INTO heuristic_scores SELECT * FROM score_rows")
            con.execute(f"INSERT INTO classification_runs (sweep_id, {', '.join(SETTINGS)}, layer) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [*key, layer])

    def classified_layers(self, sweep_id: int, settings: dict) -> list[int]:
        where, key = self._classification_key(sweep_id, settings)
        with self.cursor() as con:
            rows = con.execute(f"SELECT layer FROM classification_runs WHERE {where} ORDER BY layer", key).fetchall()
        return [r[0] for r in rows]

    def heuristic_scores(self, sweep_id: int, settings: dict, layers: list[int]) -> pd.DataFrame:
        """The stored scores of one classification run over ``layers``, most important neurons first."""
        where, key = self._classification_key(sweep_id, settings)
        with self.cursor() as con:
            return con.execute(
                f"SELECT * EXCLUDE (sweep_id, {', '.join(SETTINGS)}) FROM heuristic_scores "
                f"WHERE {where} AND layer IN ({','.join(str(int(x)) for x in layers) or 'NULL'}) "
                f"ORDER BY layer, importance_rank, score DESC", key).df()

    def neuron_matches(self, sweep_id: int, layer: int, neuron: int, rules: int) -> pd.DataFrame:
        """One neuron's matched heuristics on a sweep (every classification run with these rules), best first."""
        with self.cursor() as con:
            return con.execute(
                "SELECT heuristic, family, params, score, base_rate, lift, grp AS \"group\", direct, side, maps, "
                "threshold FROM heuristic_scores WHERE sweep_id=? AND layer=? AND neuron=? AND rules=? AND matched "
                "ORDER BY score DESC", [sweep_id, layer, neuron, rules]).df()

    def classification_state(self) -> tuple[int, str]:
        """How many classification runs the store holds and when the latest was made: what a cached Atlas view is
        keyed by, so that a new classification refreshes it."""
        with self.cursor() as con:
            runs, latest = con.execute("SELECT count(*), max(created) FROM classification_runs").fetchone()
        return int(runs), str(latest)

    def atlas_rows(self, fingerprint: str, rules: int, matched_only: bool = True) -> pd.DataFrame:
        """Every stored classification of a model with these rules, one row per (operator, neuron, heuristic)."""
        with self.cursor() as con:
            return con.execute(
                "SELECT * FROM neuron_heuristics WHERE fingerprint = ? AND rules = ? "
                + ("AND matched " if matched_only else "") + "ORDER BY op, layer, neuron, score DESC",
                [fingerprint, rules]).df()

    def score_tests(self, fingerprint: str, rules: int, run: list[str]) -> pd.DataFrame:
        """Every stored score of a model as hypergeometric tests, grouped where identical: the ``run`` columns (of
        ``neuron_heuristics``), ``k``, ``base_rate``, ``total`` (the sweep's prompts P), ``count`` (score x k),
        ``satisfied`` (base_rate x P) and ``rows`` (how many scores share them)."""
        sweep_columns = {"op", "template", "max_op", "intervention"}
        chosen = ", ".join(f"{'s' if c in sweep_columns else 'h'}.{c}" for c in run)
        with self.cursor() as con:
            return con.execute(
                f"SELECT {chosen}, h.k, h.base_rate, s.n_prompts AS total, "
                "CAST(round(h.score * h.k) AS BIGINT) AS count, "
                "CAST(round(h.base_rate * s.n_prompts) AS BIGINT) AS satisfied, count(*) AS rows "
                "FROM heuristic_scores h JOIN sweeps s USING (sweep_id) WHERE s.fingerprint = ? AND h.rules = ? "
                "GROUP BY ALL", [fingerprint, rules]).df()
