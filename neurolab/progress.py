"""The one progress protocol of every long computation: ``progress(done, total, stage)``.

``done`` of ``total`` counts the current stage's own unit (prompts, samples, layers, K values); ``stage`` names it
("" when the function has a single stage). The CLI's bar (``update(done, total, label)``) and the pages' bar
(:func:`pages.progress_bar`) take it as it is, so a caller passes its bar straight through; a function that runs
sub-tasks wraps its own ``progress`` with :func:`staged` or :func:`within` instead of writing adapters.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, float, str], None]


def report(progress: Progress | None, done: float, total: float, stage: str = "") -> None:
    """``progress(done, total, stage)``, or nothing when there is no progress to report to."""
    if progress is not None:
        progress(done, total, stage)


def _join(outer: str, inner: str) -> str:
    return f"{outer}: {inner}" if outer and inner else outer or inner


def staged(progress: Progress | None, stage: str) -> Progress | None:
    """A sub-task's own counts, reported as ``stage`` of the caller (``"stage: sub-stage"`` when it names stages)."""
    if progress is None:
        return None
    return lambda done, total, sub: progress(done, total, _join(stage, sub))


def within(progress: Progress | None, start: float, total: float) -> Progress | None:
    """A sub-task doing part of the caller's count: its ``done`` counted from ``start`` of the caller's ``total``
    (e.g. the non-math samples after the math ones)."""
    if progress is None:
        return None
    return lambda done, _total, stage: progress(start + done, total, stage)
