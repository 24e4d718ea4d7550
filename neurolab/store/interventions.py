"""Saved interventions: their JSON by key (and name), their weight masks as safetensors beside the store."""

from __future__ import annotations

import json

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..errors import StoreError


class InterventionTables:
    """Mixin of :class:`~neurolab.store.Store`. Takes and returns plain JSON and tensors, so the store does not
    depend on :mod:`neurolab.capture` (it sits below it)."""

    def save_intervention(self, spec: dict, tensors: dict[str, torch.Tensor]) -> str:
        """Save (or rename) an intervention given as ``Intervention.to_json()`` and ``.tensors()``; returns its key."""
        if tensors:
            folder = self.values_dir / "masks"
            folder.mkdir(parents=True, exist_ok=True)
            for digest, mask in tensors.items():
                path = folder / f"{digest}.safetensors"
                if not path.exists():
                    save_file({"mask": mask.contiguous()}, str(path))
        with self.cursor() as con:
            con.execute("INSERT INTO interventions (key, name, spec) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                        "SET name = excluded.name, spec = excluded.spec",
                        [spec["key"], spec.get("name", ""), json.dumps(spec)])
        return spec["key"]

    def interventions(self) -> pd.DataFrame:
        """Every saved intervention: key, name, spec (JSON text), created."""
        with self.cursor() as con:
            return con.execute("SELECT * FROM interventions ORDER BY created").df()

    def load_intervention(self, key_or_name: str) -> tuple[dict, dict[str, torch.Tensor]]:
        """A saved intervention's JSON and masks, by key or by name (the newest of that name)."""
        with self.cursor() as con:
            row = con.execute("SELECT spec FROM interventions WHERE key = ? OR name = ? ORDER BY created DESC "
                              "LIMIT 1", [key_or_name, key_or_name]).fetchone()
        if row is None:
            raise StoreError(f"no saved intervention named or keyed {key_or_name!r} in {self.path} "
                             "(`python -m neurolab interventions list` shows them)")
        spec = json.loads(row[0])
        # specs saved before the JSON listed its tensors name them in their steps' "mask"
        digests = spec.get("tensors", [step["mask"] for step in spec["steps"] if "mask" in step])
        tensors = {}
        for digest in digests:
            path = self.values_dir / "masks" / f"{digest}.safetensors"
            if not path.exists():
                raise StoreError(f"the mask file {path} of intervention {spec['key']} is missing")
            tensors[digest] = load_file(str(path))["mask"]
        return spec, tensors
