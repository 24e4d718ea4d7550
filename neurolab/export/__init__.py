"""Figures and tables out of neurolab: static and interactive renderings, the numbers behind them, and how they were
made (provenance), for the pages' Export controls and ``python -m neurolab figure``."""
