"""Errors a user can cause: one hierarchy under :class:`NeurolabError`, each message saying what went wrong and what
to do, so the UI and the CLI show it as is. Anything else that escapes is a bug and keeps its traceback."""


class NeurolabError(Exception):
    """Base class: anything raised as a NeurolabError is shown to the user without a traceback."""


class InputError(NeurolabError, ValueError):
    """A setting or argument out of range (a layer that does not exist, a malformed neuron list ...).

    Also a ``ValueError``, so code that validates arguments the Python way keeps working."""


class ModelLoadError(NeurolabError):
    """A model id or path that cannot be loaded (missing, unreachable offline, no safetensors ...)."""


class UnsupportedArchitectureError(NeurolabError):
    """A model whose family has no adapter yet."""


class StoreError(NeurolabError):
    """The store file cannot be used (corrupt, locked by another process, unwritable); nothing was changed."""


class InterventionError(InputError):
    """An intervention that does not fit the model (unknown parameter, neuron out of range, wrong mask shape)."""
