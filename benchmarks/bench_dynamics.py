"""The whole ``+`` series of the embedded model from an empty store (budget: under 3 minutes on 2 cores), then the
same run again (it must compute nothing; the models are loaded by then), and the page's slider step (one
checkpoint's neuron map and heuristics, read from the store; budget 0.5 s).

    .venv/bin/python benchmarks/bench_dynamics.py [--op +] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from neurolab.analysis.dynamics import embedded_series, run_series
from neurolab.analysis.neuron_maps import load_neuron_map
from neurolab.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stages: dict[str, float] = {}
    last = [time.perf_counter(), ""]

    def progress(done: float, total: float, stage: str) -> None:
        now = time.perf_counter()
        stages[last[1]] = stages.get(last[1], 0.0) + now - last[0]
        last[:] = [now, ": ".join(stage.split(": ")[1:3])]  # the stage within a checkpoint, summed over them

    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.duckdb")
        start, cpu = time.perf_counter(), time.process_time()
        dynamics = run_series(store, embedded_series(), args.op, progress=progress)
        first, cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        run_series(store, embedded_series(), args.op)
        rerun = time.perf_counter() - start
        steps = []
        for row in dynamics.summary.itertuples():
            start = time.perf_counter()
            load_neuron_map(store, int(row.sweep_id), 3, 12)
            dynamics.neuron(3, 12)
            steps.append(time.perf_counter() - start)
    figures = {"series_s": round(first, 1), "rerun_s": round(rerun, 2), "slider_step_max_s": round(max(steps), 4),
               "per_checkpoint_s": round(first / len(dynamics.summary), 1),
               "stages_s": {k: round(v, 1) for k, v in stages.items() if k}, "cpu_s": round(cpu, 1)}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
        print(dynamics.table().to_string())


if __name__ == "__main__":
    main()
