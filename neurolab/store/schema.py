"""The store's schema, its version, and the migration of files written by earlier releases.

Version 1 (neurolab 0.1) kept neuron values as long DuckDB rows (8.6 bytes per value) and keyed results without the
dtype, the intervention, or the importance run a classification used. Version 2 keeps values in memory-mapped .npy
blocks beside the database (2 bytes per value, one neuron's read a contiguous slice), and every key is complete.
A v1 file is migrated in place when opened: after a backup copy beside it, in one transaction.
"""

from __future__ import annotations

SCHEMA_VERSION = 2

TABLES_V2 = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS models (
    fingerprint VARCHAR PRIMARY KEY, weights VARCHAR, dtype VARCHAR, revision VARCHAR, name VARCHAR,
    source VARCHAR, family VARCHAR, n_layers INTEGER, d_mlp INTEGER, max_single_token INTEGER,
    registered TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS interventions (
    key VARCHAR PRIMARY KEY, name VARCHAR, spec VARCHAR NOT NULL, created TIMESTAMP DEFAULT current_timestamp);
CREATE SEQUENCE IF NOT EXISTS sweep_ids START 1;
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id INTEGER PRIMARY KEY DEFAULT nextval('sweep_ids'), fingerprint VARCHAR NOT NULL, op VARCHAR NOT NULL,
    template VARCHAR NOT NULL, max_op INTEGER NOT NULL, op1_from INTEGER NOT NULL,
    intervention VARCHAR NOT NULL DEFAULT 'none', n_prompts INTEGER NOT NULL, chunk_size INTEGER NOT NULL,
    created TIMESTAMP DEFAULT current_timestamp,
    UNIQUE (fingerprint, op, template, max_op, op1_from, intervention));
CREATE TABLE IF NOT EXISTS prompts (
    sweep_id INTEGER, idx INTEGER, op1 INTEGER, op2 INTEGER, answer INTEGER, prompt VARCHAR,
    top1 VARCHAR, top1_prob FLOAT, answer_prob FLOAT, correct BOOLEAN, PRIMARY KEY (sweep_id, idx));
CREATE SEQUENCE IF NOT EXISTS block_ids START 1;
CREATE TABLE IF NOT EXISTS value_blocks (
    block_id INTEGER PRIMARY KEY DEFAULT nextval('block_ids'), sweep_id INTEGER NOT NULL, layer INTEGER NOT NULL,
    neurons INTEGER[] NOT NULL, k_file VARCHAR NOT NULL, kv_file VARCHAR, lens_file VARCHAR,
    created TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS block_progress (block_id INTEGER, chunk INTEGER, PRIMARY KEY (block_id, chunk));
CREATE TABLE IF NOT EXISTS importance (
    sweep_id INTEGER, method VARCHAR, n_prompts INTEGER, seed INTEGER, layer INTEGER, neuron INTEGER,
    mean DOUBLE, std DOUBLE, score DOUBLE, rank INTEGER,
    PRIMARY KEY (sweep_id, method, n_prompts, seed, layer, neuron));
CREATE TABLE IF NOT EXISTS heuristic_scores (
    sweep_id INTEGER, maps VARCHAR, top_n INTEGER, threshold DOUBLE, n_prompts INTEGER, seed INTEGER,
    rules INTEGER, layer INTEGER, neuron INTEGER, importance_rank INTEGER, heuristic VARCHAR, family VARCHAR,
    grp VARCHAR, direct BOOLEAN, params VARCHAR, score DOUBLE, k INTEGER, base_rate DOUBLE, lift DOUBLE, side VARCHAR,
    matched BOOLEAN);
CREATE TABLE IF NOT EXISTS analyses (
    key VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, spec VARCHAR NOT NULL, file VARCHAR NOT NULL,
    created TIMESTAMP DEFAULT current_timestamp);
CREATE TABLE IF NOT EXISTS classification_runs (
    sweep_id INTEGER, maps VARCHAR, top_n INTEGER, threshold DOUBLE, n_prompts INTEGER, seed INTEGER,
    rules INTEGER, layer INTEGER, created TIMESTAMP DEFAULT current_timestamp);
"""

VIEWS = """
CREATE OR REPLACE VIEW neuron_heuristics AS
    SELECT s.fingerprint, s.op, s.template, s.max_op, s.intervention, h.* EXCLUDE (sweep_id)
    FROM heuristic_scores h JOIN sweeps s USING (sweep_id);
"""

#: tables and views a user may export or query; ``neuron_values`` and ``activations`` are streamed from the blocks
TABLES = ("models", "interventions", "sweeps", "prompts", "value_blocks", "block_progress", "importance", "analyses",
          "heuristic_scores", "classification_runs", "neuron_heuristics", "neuron_values", "activations")

#: the view over streamed neuron values, defined per query (see ``StoreConnection.query``)
ACTIVATIONS_VIEW = """
CREATE OR REPLACE TEMP VIEW activations AS
    SELECT v.sweep_id, s.fingerprint, s.op, s.template, s.max_op, s.intervention, v.layer, v.neuron, p.idx,
           p.op1, p.op2,
           p.answer, p.correct, v.k, v.kv
    FROM neuron_values v JOIN sweeps s USING (sweep_id) JOIN prompts p ON p.sweep_id = v.sweep_id AND p.idx = v.idx
"""
