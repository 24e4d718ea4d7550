"""Errors a user can cause; each message says what went wrong and what to do, so the UI and CLI show it as is."""


class NeurolabError(Exception):
    """Base class: anything raised as a NeurolabError is shown to the user without a traceback."""


class ModelLoadError(NeurolabError):
    """A model id or path that cannot be loaded (missing, unreachable offline, no safetensors ...)."""


class UnsupportedArchitectureError(NeurolabError):
    """A model whose family has no adapter yet."""
