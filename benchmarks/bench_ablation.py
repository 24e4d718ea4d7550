"""Ablation benchmark: the KV-cache prefix-shared grid pass against the plain trace, one ablation toggle over a grid
(the ablated grid and its random control into the store), and the current prompt's prediction under an ablation.

Run: ``.venv/bin/python benchmarks/bench_ablation.py [--model embedded] [--max-op 100] [--repeats 5]``.
Timings on shared machines are noisy, so the grid-pass figures are ratios measured in this one run: the plain
trace (``share_prefix=False``), the shared pass with the prefix split already cached (warm: the dashboard's case,
the one the targets are read against) and the shared pass with the split cache cleared first (cold) are
interleaved (ABCABC...) and compared by their medians. The ablation is the issue's probe: 52 layer-3 neurons zeroed.
The toggle and prediction figures are absolute medians (targets from the issue: <= 1 s and <= 100 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neurolab.analysis.ablation import ablate_grid, neuron_ablation, random_control, top_n
from neurolab.analysis.knockout import prompt_knockout
from neurolab.analysis.mathneuro import evaluate_masks, scores_for
from neurolab.analysis.predict import report
from neurolab.analysis.sweep import grid_for
from neurolab.capture import kept, prefix
from neurolab.capture.interventions import ablation
from neurolab.capture.trace import run, run_side_by_side
from neurolab.models.loading import load_model
from neurolab.store import Store, deferred
from neurolab.tasks.grid import TEMPLATES
from neurolab.tasks.samples import load_samples

SPEEDUP_TARGETS = {"plain": 1.6, "fewshot": 4.0}
TOGGLE_TARGET = 1.0  # s, a new ablation: the ablated grid and its random control
PREDICT_TARGET = 0.100  # s


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ids_of(model, grid) -> torch.Tensor:
    """The answers' token ids, [n, 1] (a grid pass asks for their probabilities)."""
    return torch.as_tensor(np.asarray(model.number_token_ids)[np.asarray(grid.answers)])[:, None]


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the embedded model)")
    parser.add_argument("--op", default="+")
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of each grid pass")
    parser.add_argument("--toggles", type=int, default=8, help="new ablations toggled on (median over these)")
    parser.add_argument("--predicts", type=int, default=20)
    parser.add_argument("--prompt", default="23+45=")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object at the end")
    args = parser.parse_args()

    model = load_model(args.model, device="cpu")
    probe = ablation([(3, n) for n in range(52)], name="probe: L3 N0-51")
    print(f"model {model.name} ({model.adapter.family}, {model.n_layers} layers x {model.d_mlp} neurons, "
          f"{model.dtype} on {model.device}), {args.op} grid {args.max_op}x{args.max_op}, "
          f"torch threads {torch.get_num_threads()}")
    rows: list[tuple[str, str, str, str]] = []
    figures: dict[str, float] = {}

    # 1. the grid pass, prefix-shared vs plain, with and without the ablation
    for name in ("plain", "fewshot"):
        grid = grid_for(model, args.op, args.max_op, TEMPLATES[name])
        prompts = grid.prompts
        plan = prefix.split_shared_prefix(model.tokenizer, prompts)
        shape = "no split" if plan is None else (f"{len(plan.prefixes)} prefixes of {plan.prefix_length} tokens, "
                                                 f"suffixes of {plan.suffixes.shape[1]}")
        print(f"\ntemplate {name}: {len(prompts):,} prompts, e.g. {prompts[0]!r}; {shape}")
        for label, iv in (("no ablation", None), ("ablation", probe)):
            shared = run(model, prompts, logits=True, intervention=iv, share_prefix=True, keep=False)  # + warm-up
            plain = run(model, prompts, logits=True, intervention=iv, share_prefix=False, keep=False)
            diff = float((shared.logits - plain.logits).abs().max())
            agree = float((shared.top1 == plain.top1).mean())
            times: dict[str, list[float]] = {"plain": [], "warm": [], "cold": []}
            for _ in range(args.repeats):
                times["plain"].append(timed(lambda iv=iv: run(model, prompts, intervention=iv, share_prefix=False,
                                                              keep=False)))
                times["warm"].append(timed(lambda iv=iv: run(model, prompts, intervention=iv, keep=False)))
                prefix._SPLITS.clear()
                times["cold"].append(timed(lambda iv=iv: run(model, prompts, intervention=iv, keep=False)))
            p, w, c = (statistics.median(times[k]) for k in ("plain", "warm", "cold"))
            target = SPEEDUP_TARGETS[name]
            print(f"  {label:12s} plain {p * 1000:7.0f} ms, shared warm {w * 1000:7.0f} ms ({p / w:.2f}x), "
                  f"cold {c * 1000:7.0f} ms ({p / c:.2f}x)  (target >= {target}x, warm); "
                  f"max |logit diff| {diff:.2e}, top-1 agreement {agree:.2%}")
            each = "; ".join(f"{k} " + " ".join(f"{t * 1000:.0f}" for t in v) for k, v in times.items())
            print(f"    each run (ms): {each}")
            rows.append((f"grid pass `{name}`, {label}: shared / plain trace, warm (cold)",
                         f"{p / w:.2f}x ({p / c:.2f}x); {p * 1000:.0f} -> {w * 1000:.0f} ms", f">= {target}x",
                         met(p / w >= target)))
            rows.append((f"grid pass `{name}`, {label}: same outputs", f"max abs logit diff {diff:.1e}, "
                         f"top-1 agreement {agree:.2%}", "equal", met(diff <= 1e-4 and agree == 1.0)))

    # in bfloat16 the two paths differ by rounding: report how often they agree on the answer
    half = load_model(args.model, device="cpu", dtype="bfloat16")
    prompts = grid_for(half, args.op, args.max_op).prompts
    shared, plain = (run(half, prompts, logits=True, share_prefix=s, keep=False) for s in (True, False))
    agree = float((shared.top1 == plain.top1).mean())
    diff = float((shared.logits - plain.logits).abs().max())
    print(f"\nbfloat16: max |logit diff| {diff:.3f}, top-1 agreement {agree:.2%}")
    rows.append(("grid pass `plain` in bfloat16: shared vs plain trace", f"max abs logit diff {diff:.2f}, "
                 f"top-1 agreement {agree:.2%}", "reported", ""))

    # 2. toggling an ablation over the grid: the ablated grid + its random control (one side-by-side pass, resumed
    # from the edited layer), the clean baseline cached (stored sweep, kept residuals); store writes come after
    grid = grid_for(model, args.op, args.max_op)
    clean_times = []
    for _ in range(args.repeats):
        clean_times.append(timed(lambda: run(model, grid.prompts, token_ids=ids_of(model, grid), keep=False)))
    clean_pass = statistics.median(clean_times)
    figures["clean_pass_s"] = clean_pass
    print(f"\none clean prefix-shared grid pass ({len(grid):,} prompts, answers only): "
          f"median {clean_pass * 1000:.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "ablation.duckdb")
        warm = timed(lambda: ablate_grid(model, store, args.op, probe, args.max_op))  # clean grid, importance
        prompt_knockout(model, store, args.op, args.max_op)  # the classification the knockouts start from
        math_scores, general_scores = scores_for(model, load_samples(n=100), store)
        deferred.flush()
        print(f"warm-up ablate_grid (clean grid kept, importance ranking, probe and its control): {warm:.2f} s")
        n_layers = model.n_layers
        for layer in range(n_layers):
            toggles = [neuron_ablation(top_n(model, store, grid, layer, n), origin="top-n")
                       for n in range(11, 11 + args.toggles)]
            new, ratios = [], []
            for iv in toggles:  # each toggle beside a clean pass timed just before it: the machine is noisy
                clean = timed(lambda: run(model, grid.prompts, token_ids=ids_of(model, grid), keep=False))
                new.append(timed(lambda iv=iv: ablate_grid(model, store, args.op, iv, args.max_op)))
                ratios.append(new[-1] / clean)
                deferred.flush()  # the write follows the result; a user's next toggle comes seconds later
            median, ratio = statistics.median(new), statistics.median(ratios)
            bound = 2 * (n_layers - layer) / n_layers + 0.1
            target = "<= 0.20x and <= 0.25 s" if layer == n_layers - 1 else f"<= {bound:.2f}x"
            ok = (ratio <= 0.20 and median <= 0.25) if layer == n_layers - 1 else ratio <= bound
            print(f"toggle a new ablation of layer {layer} (ablated + control): median {median * 1000:.0f} ms, "
                  f"median {ratio:.2f}x the clean pass beside it (target {target}); each (ms): "
                  + " ".join(f"{t * 1000:.0f}" for t in new))
            rows.append((f"toggle a new layer-{layer} ablation (ablated grid + random control), median of {len(new)}",
                         f"{median * 1000:.0f} ms = {ratio:.2f}x a clean pass", target, met(ok)))
            figures[f"toggle_layer{layer}_s"] = median
            figures[f"toggle_layer{layer}_ratio"] = ratio
            # the shortcut's outputs against the full pass
            chosen = [toggles[0], random_control(model, store, grid, toggles[0])]
            fast = run_side_by_side(model, grid.prompts, chosen, logits=True)
            slow = [run(model, grid.prompts, logits=True, intervention=iv, keep=False, share_prefix=False)
                    for iv in chosen]
            diff = max(float((f.logits - s.logits).abs().max()) for f, s in zip(fast, slow))
            agree = min(float((f.top1 == s.top1).mean()) for f, s in zip(fast, slow))
            print(f"  equals the full plain pass: max |logit diff| {diff:.1e}, top-1 agreement {agree:.2%}")
            rows.append((f"layer-{layer} toggle equals the full pass", f"max abs logit diff {diff:.1e}, top-1 "
                         f"agreement {agree:.2%}", "<= 1e-4, 100%", met(diff <= 1e-4 and agree == 1.0)))
            figures[f"toggle_layer{layer}_max_logit_diff"] = diff
        figures["toggle_last_layer_s"] = figures[f"toggle_layer{n_layers - 1}_s"]
        figures["toggle_last_layer_ratio"] = figures[f"toggle_layer{n_layers - 1}_ratio"]
        figures["toggle_first_layer_ratio"] = figures["toggle_layer0_ratio"]
        cached = [timed(lambda iv=iv: ablate_grid(model, store, args.op, iv, args.max_op)) for iv in toggles]
        c = statistics.median(cached)
        print(f"toggle it back on (cached): median {c * 1000:.0f} ms, max {max(cached) * 1000:.0f} ms")
        rows.append((f"toggle a computed ablation back on (cached), median of {len(cached)}", f"{c * 1000:.0f} ms",
                     "<= 100 ms", met(c <= 0.1)))
        figures["toggle_cached_s"] = c

        # 3. the same mechanism in the knockout curve and MathNeuro's K sweep: nothing kept (before) vs kept (after)
        cache = kept.cache_for(model.device)
        budget = cache.budget
        for label, limit in (("before (nothing kept)", 0), ("after (kept)", budget)):
            cache.clear()
            cache.budget = limit
            seed = 1 if limit else 2  # a fresh analysis each time (the store caches them)
            t = timed(lambda seed=seed: prompt_knockout(model, store, args.op, args.max_op, seed=seed))
            figures[f"knockout_{'after' if limit else 'before'}_s"] = t
            print(f"prompt knockout (N = 0..100, 200 prompts, both arms), {label}: {t:.2f} s")
        for label, limit in (("before (nothing kept)", 0), ("after (kept)", budget)):
            cache.clear()
            cache.budget = limit
            t = timed(lambda: evaluate_masks(model, math_scores, general_scores, [0.01, 0.05], baselines=False))
            figures[f"mathneuro_{'after' if limit else 'before'}_s"] = t
            print(f"MathNeuro K sweep evaluation (K = 0.01, 0.05, every grid + facts), {label}: {t:.2f} s")
        cache.budget = budget
        rows.append(("prompt knockout curve (N = 0..100): nothing kept -> kept",
                     f"{figures['knockout_before_s']:.1f} s -> {figures['knockout_after_s']:.1f} s", "reported", ""))
        rows.append(("MathNeuro K sweep evaluation (2 K): nothing kept -> kept",
                     f"{figures['mathneuro_before_s']:.1f} s -> {figures['mathneuro_after_s']:.1f} s", "reported",
                     ""))
        store.close()

    # 4. the current prompt's prediction under the ablation
    report(model, args.prompt, intervention=probe)
    predicts = [timed(lambda: report(model, args.prompt, intervention=probe)) for _ in range(args.predicts)]
    r = statistics.median(predicts)
    print(f"report({args.prompt!r}) under the probe: median {r * 1000:.1f} ms, max {max(predicts) * 1000:.1f} ms "
          f"over {len(predicts)} (target <= {PREDICT_TARGET * 1000:.0f} ms)")
    rows.append((f"prediction of {args.prompt!r} under the ablation, median of {len(predicts)}", f"{r * 1000:.1f} ms",
                 f"<= {PREDICT_TARGET * 1000:.0f} ms", met(r <= PREDICT_TARGET)))

    print("\n| what | figure | target | |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
