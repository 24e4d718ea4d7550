"""Store writes that follow a result instead of preceding it.

A user waiting on a toggle waits for the model, not for DuckDB: a result is returned first and written after, on
one writer thread per process (writes stay in submission order). Each write is one transaction, so a crash between
the two loses only what a rerun recomputes, and the store never holds half a result. :func:`flush` waits for every
pending write (before reading what may not be written yet, and at exit).
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

_LOG = logging.getLogger(__name__)
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurolab-store-writer")
_PENDING: set[Future] = set()
_LOCK = threading.Lock()


def later(write: Callable[[], object]) -> Future:
    """Run ``write`` on the writer thread; a failure is logged (the result it would have kept is recomputed)."""

    def guarded() -> None:
        try:
            write()
        except Exception:  # a lost cache write must not take the caller down
            _LOG.exception("a deferred store write failed; its result will be recomputed when asked again")

    future = _EXECUTOR.submit(guarded)
    with _LOCK:
        _PENDING.add(future)
    future.add_done_callback(lambda done: _discard(done))
    return future


def _discard(future: Future) -> None:
    with _LOCK:
        _PENDING.discard(future)


def flush() -> None:
    """Wait until every write submitted so far is in the store."""
    with _LOCK:
        pending = list(_PENDING)
    for future in pending:
        future.result()


atexit.register(flush)
