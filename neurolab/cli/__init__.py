"""The command line (``python -m neurolab``): every long computation, runnable in batch."""

from .commands import build_parser, main

__all__ = ["build_parser", "main"]
