"""What a clean pass leaves behind for the edits that follow, within a byte budget.

An edit at layer L leaves everything before layer L as the clean model computed it, so a grid pass under the edit
can start at layer L from the clean residual stream there (:mod:`neurolab.capture.trace`). Those residuals, the
final residual and the last layer's neurons are kept here, with the means that mean ablations replace neurons by:
tensors on the model's device, least recently used first out, within a budget per device sized from its free memory
when the first entry lands (``NEUROLAB_KEEP_BYTES`` overrides it). Keys name everything a value depends on (model
fingerprint = weights + dtype, the prompts, the pass's path, the layer), so nothing is ever served for another
model, precision or grid. A big model on a GPU keeps what fits, most recently used first: the layers being edited.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import torch

from ..models.devices import free_memory

#: share of a device's free memory the kept tensors may take
BUDGET_SHARE = 0.25


class DeviceCache:
    """A least-recently-used map of tensors (or dicts of tensors) on one device, bounded in bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable):
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: Hashable, value, size: int | None = None) -> bool:
        """Keep ``value`` unless it alone exceeds the budget; evicts the least recently used to make room."""
        size = nbytes(value) if size is None else size
        if size > self.budget:
            return False
        with self._lock:
            if key in self._items:
                self.used -= self._items.pop(key)[1]
            while self._items and self.used + size > self.budget:
                self.used -= self._items.popitem(last=False)[1][1]
            self._items[key] = (value, size)
            self.used += size
        return True

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.used = 0

    def describe(self) -> str:
        return (f"{self.used / 2**20:,.1f} of {self.budget / 2**20:,.0f} MiB in {len(self)} entries "
                f"({self.hits} hits, {self.misses} misses)")


def nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


_CACHES: dict[str, DeviceCache] = {}
_CACHES_LOCK = threading.Lock()


def cache_for(device: torch.device | str) -> DeviceCache:
    """The one cache of a device (created with its budget on first use)."""
    name = str(device)
    with _CACHES_LOCK:
        if name not in _CACHES:
            override = os.environ.get("NEUROLAB_KEEP_BYTES")
            budget = int(override) if override else int(free_memory(torch.device(name)) * BUDGET_SHARE)
            _CACHES[name] = DeviceCache(budget)
        return _CACHES[name]


def describe(device: torch.device | str) -> str:
    """One line for ``info`` and the sidebar: what is kept on the device, of what budget."""
    return cache_for(device).describe()
