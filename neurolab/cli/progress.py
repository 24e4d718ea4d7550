"""The CLI's one progress bar: every long computation of the core reports ``(done, total)`` through it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm

Update = Callable[..., None]


@contextmanager
def progress_bar(desc: str, quiet: bool, unit: str = "prompt") -> Iterator[Update]:
    """A tqdm bar; the yielded ``update(done, total, label=None, **info)`` moves it (label renames it, info shows
    beside it)."""
    bar = tqdm(desc=desc, unit=unit, disable=quiet, dynamic_ncols=True)

    def update(done: float, total: float, label: str | None = None, **info: float) -> None:
        bar.total, bar.n = total, done
        if label:
            bar.set_description(label, refresh=False)
        if info:
            bar.set_postfix({k: round(v, 3) for k, v in info.items()}, refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
