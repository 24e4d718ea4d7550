"""The one store every result lives in: DuckDB for keys and small results, .npy blocks for neuron values."""

from ..errors import StoreError
from .analyses import AnalysisTables
from .connection import StoreConnection, default_store_path
from .interventions import InterventionTables
from .results import ResultTables
from .schema import SCHEMA_VERSION, TABLES
from .sweeps import SweepKey, SweepTables
from .values import ValueBlocks


class Store(SweepTables, ValueBlocks, ResultTables, InterventionTables, AnalysisTables, StoreConnection):
    """One DuckDB file and its value folder; each mixin holds one family of results."""


__all__ = ["SCHEMA_VERSION", "TABLES", "Store", "StoreError", "SweepKey", "default_store_path"]
