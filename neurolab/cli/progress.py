"""The CLI's one progress bar: every long computation of the core reports ``(done, total, stage)`` through it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Update = Callable[..., None]


@contextmanager
def progress_bar(desc: str, quiet: bool, unit: str = "prompt") -> Iterator[Update]:
    """A tqdm bar; the yielded ``update(done, total, stage="")`` (the core's progress protocol) moves it, and a stage
    renames it."""
    from tqdm import tqdm  # here, not at the top: ``--help`` needs no progress bar

    bar = tqdm(desc=desc, unit=unit, disable=quiet, dynamic_ncols=True)

    def update(done: float, total: float, stage: str = "") -> None:
        bar.total, bar.n = total, done
        if stage:
            bar.set_description(stage, refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
