"""Training-step time of FDRL against the same two backbones under a plain classifier.

(a) FDRLModel and (b) a baseline of the same wav2vec2 and BERT backbones, pooled by the same methods,
concatenated and classified by one linear layer, each timed for forward + backward + AdamW step on the same
IEMOCAP-like batches, interleaved a b, b a, a b, ... after warm-up. Separately, FDRL's own parts (encoders,
discriminators, fusion and every loss term, from pooled features) against the baseline's linear head, so the
end-to-end difference can be explained. The issue's target: FDRL's parts cost at most 5% over the backbones.

    .venv/bin/python bench/bench_train_step.py                      # base shapes, CPU, 4-6 minutes here
    .venv/bin/python bench/bench_train_step.py --device cuda --batch_size 16 --repeats 20
"""

import argparse
import copy
import time

import numpy as np
import torch

import common
from common import logger
from configuration_fdrl import FDRLConfig
from fdrl.training.systems import BackboneClassifier
from modeling_fdrl import FDRLModel


TARGET_OVERHEAD_PERCENT = 5.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=2, help="Utterances per training step.")
    parser.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="Timed (FDRL, baseline) pairs after warm-up (fewer if --time_budget_s runs out).",
    )
    parser.add_argument("--warmup", type=int, default=1, help="Untimed pairs first (allocator, AdamW state).")
    parser.add_argument("--head_repeats", type=int, default=200, help="Timed pairs of the heads-only steps.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Where to run.")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="bf16 runs under torch.autocast; auto: bf16 on cuda, fp32 on cpu.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the durations, inputs and dropout draws.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument(
        "--group_by_length",
        action="store_true",
        help="Batch utterances of similar duration (less padding), as a length-grouped sampler.",
    )
    parser.add_argument(
        "--freeze_feature_encoder",
        action="store_true",
        help="Freeze wav2vec2's convolutional feature encoder in both models.",
    )
    parser.add_argument(
        "--time_budget_s",
        type=float,
        default=360.0,
        help="Start no full-step pair that would end past this many seconds (count recorded).",
    )
    parser.add_argument(
        "--head_time_budget_s",
        type=float,
        default=30.0,
        help="Stop the heads-only pairs after this many seconds (at least 20 pairs).",
    )
    parser.add_argument("--tiny", action="store_true", help="Tiny backbones (smoke test), not base shapes.")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/train_step_<device>.json).")
    return parser.parse_args(argv)


def build_models(config, device):
    fdrl = FDRLModel(config)
    # The protocol's concatenation baseline, around copies of the very same backbone weights (no difference in
    # values, denormals say, can reach the timings), pooled by FDRL's own code.
    baseline = BackboneClassifier(config, copy.deepcopy(fdrl.audio_model), copy.deepcopy(fdrl.text_model))
    return fdrl.to(device).train(), baseline.to(device).train()


def head_parameters(model):
    return [p for name, p in model.named_parameters() if not name.startswith(("audio_model.", "text_model."))]


def pair_order(models, index):
    """a, b then b, a: whichever model meets a new batch first may pay for fresh memory; alternating cancels it."""
    names = list(models) if index % 2 == 0 else list(reversed(models))
    return [(name, models[name]) for name in names]


def time_full_steps(models, optimizers, batches, args, device, dtype):
    """Interleaved full steps, a b, b a, a b, ...; the first `args.warmup` pairs are not recorded."""
    times = {name: [] for name in models} | {"fdrl_first": []}
    peak_memory = {name: 0 for name in models}
    start, last_pair_s = time.perf_counter(), 0.0
    for index, batch in enumerate(batches):
        timed = index >= args.warmup
        if timed and times["fdrl"] and time.perf_counter() - start + last_pair_s > args.time_budget_s:
            logger.warning(f"stopping after {len(times['fdrl'])} pairs: the next would pass --time_budget_s")
            break
        batch = {key: value.to(device) for key, value in batch.items()}
        pair = {}
        for name, model in pair_order(models, index):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            pair[name] = common.timed_step(model, optimizers[name], batch, device, dtype, args.seed + index)
            if device.type == "cuda":
                peak_memory[name] = max(peak_memory[name], torch.cuda.max_memory_allocated(device))
        last_pair_s = sum(pair.values())
        padded = batch["input_values"].shape[1] / common.SAMPLING_RATE
        label = "pair" if timed else "warm-up"
        logger.info(
            f"{label} {index}: fdrl {pair['fdrl']:.2f} s, backbones {pair['baseline']:.2f} s "
            f"(padded to {padded:.1f} s, {next(iter(pair))} first)"
        )
        if timed:
            for name in models:
                times[name].append(pair[name])
            times["fdrl_first"].append(next(iter(pair)) == "fdrl")
    return times, peak_memory


def time_head_steps(models, batch_size, args, device, dtype):
    """Interleaved heads-only steps: FDRL's parts vs the baseline's linear head, from pooled features."""
    config = models["fdrl"].config
    generator = torch.Generator().manual_seed(args.seed)
    pooled_audio = torch.randn(batch_size, config.audio_config.hidden_size, generator=generator)
    pooled_text = torch.randn(batch_size, config.text_config.hidden_size, generator=generator)
    pooled_audio, pooled_text = (x.to(device).requires_grad_() for x in (pooled_audio, pooled_text))
    batch = {
        "pooled_audio": pooled_audio,
        "pooled_text": pooled_text,  # both models skip their backbones
        "labels": torch.arange(batch_size, device=device) % config.num_labels,
    }
    optimizers = {name: torch.optim.AdamW(head_parameters(model), lr=1e-5) for name, model in models.items()}
    times = {name: [] for name in models}
    start = time.perf_counter()
    for index in range(10 + args.head_repeats):
        if index >= 30 and time.perf_counter() - start > args.head_time_budget_s:
            logger.warning(f"heads: stopping after {index - 10} pairs, past --head_time_budget_s")
            break
        for name, model in pair_order(models, index):
            seconds = common.timed_step(model, optimizers[name], batch, device, dtype, args.seed + index)
            if index >= 10:
                times[name].append(seconds)
    return times


def main(argv=None):
    args = parse_args(argv)
    device, dtype, machine = common.start(args)

    # Models: FDRLConfig() defaults are wav2vec2-base and bert-base-uncased shapes, randomly initialised
    config = common.tiny_fdrl_config() if args.tiny else FDRLConfig()
    config.freeze_feature_encoder = args.freeze_feature_encoder
    fdrl, baseline = build_models(config, device)
    models = {"fdrl": fdrl, "baseline": baseline}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-5) for name, model in models.items()}
    logger.info(
        f"parameters: fdrl {sum(p.numel() for p in fdrl.parameters()) / 1e6:.1f} M, "
        f"baseline {sum(p.numel() for p in baseline.parameters()) / 1e6:.1f} M"
    )

    # Inputs: IEMOCAP-like durations and ~20-token transcripts, one batch per pair
    rng = np.random.default_rng(args.seed)
    num_batches = args.warmup + args.repeats
    durations = common.duration_batches(rng, args.batch_size, num_batches, args.group_by_length)
    tokens = common.token_counts(rng, num_batches * args.batch_size).reshape(num_batches, args.batch_size)
    generator = torch.Generator().manual_seed(args.seed)
    batches = [
        common.make_batch(d, t, config.text_config.vocab_size, config.num_labels, generator)
        for d, t in zip(durations, tokens)
    ]

    # Timing: full steps, then FDRL's own parts alone
    full, peak_memory = time_full_steps(models, optimizers, batches, args, device, dtype)
    heads = time_head_steps(models, args.batch_size, args, device, dtype)

    # Figures
    results = summarize(full, heads, args.batch_size, durations[args.warmup : args.warmup + len(full["fdrl"])])
    if device.type == "cuda":
        results["max_memory_allocated_gib"] = {name: value / 2**30 for name, value in peak_memory.items()}
    settings = {
        "shapes": "tiny" if args.tiny else "wav2vec2-base + bert-base-uncased (random init)",
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "repeats_done": len(full["fdrl"]),
        "warmup": args.warmup,
        "head_repeats": args.head_repeats,
        "dtype": dtype,
        "seed": args.seed,
        "order": "alternating: FDRL first in even pairs",
        "group_by_length": args.group_by_length,
        "freeze_feature_encoder": args.freeze_feature_encoder,
        "optimizer": "AdamW (torch defaults, lr 1e-5)",
        "time_budget_s": args.time_budget_s,
        "head_time_budget_s": args.head_time_budget_s,
        "wav2vec2_layerdrop": config.audio_config.layerdrop,
        "wav2vec2_mask_time_prob": config.audio_config.mask_time_prob,
        "duration_distribution": {
            "lognormal_mu": common.DURATION_MU,
            "lognormal_sigma": common.DURATION_SIGMA,
            "clip_s": [common.MIN_DURATION, common.MAX_DURATION],
        },
        "batch_durations_s": durations.round(2).tolist(),
        "batch_tokens": tokens.tolist(),
    }
    output = args.output or common.RESULTS_DIR / f"train_step_{device.type}.json"
    payload = common.write_result(output, "bench_train_step.py", machine, settings, results)
    print_table(results)
    return payload


def summarize(full, heads, batch_size, timed_durations):
    fdrl, baseline = common.summarize(full["fdrl"]), common.summarize(full["baseline"])
    paired = [a / b for a, b in zip(full["fdrl"], full["baseline"])]
    ratios = common.summarize(paired)
    by_order = {}  # shows the order effect that alternating cancels
    for first, key in ((True, "fdrl_first"), (False, "baseline_first")):
        chosen = [ratio for ratio, fdrl_first in zip(paired, full["fdrl_first"]) if fdrl_first == first]
        if chosen:
            by_order[key] = float(np.median(chosen))
    fdrl_heads, baseline_head = common.summarize(heads["fdrl"]), common.summarize(heads["baseline"])
    heads_extra = fdrl_heads["median"] - baseline_head["median"]
    components_percent = 100.0 * heads_extra / baseline["median"]
    utterances_per_s = batch_size / fdrl["median"]
    return {
        "step_s": {"fdrl": fdrl, "baseline": baseline},
        "ratio_fdrl_over_baseline": {
            "of_medians": fdrl["median"] / baseline["median"],
            "paired": ratios,
            "paired_median_by_order": by_order,
        },
        "heads_step_s": {"fdrl": fdrl_heads, "baseline": baseline_head},
        "overhead_percent": {
            "end_to_end": 100.0 * (fdrl["median"] / baseline["median"] - 1.0),
            "end_to_end_paired_median": 100.0 * (ratios["median"] - 1.0),
            "end_to_end_paired_iqr": 100.0 * ratios["iqr"],
            "from_heads": components_percent,
        },
        "target": {
            "max_overhead_percent": TARGET_OVERHEAD_PERCENT,
            "met_from_heads": components_percent <= TARGET_OVERHEAD_PERCENT,
            "met_end_to_end": 100.0 * (ratios["median"] - 1.0) <= TARGET_OVERHEAD_PERCENT,
        },
        "throughput": {
            "utterances_per_s": {"fdrl": utterances_per_s, "baseline": batch_size / baseline["median"]},
            "audio_seconds_per_s_fdrl": float(np.mean(np.sum(timed_durations, axis=1))) / fdrl["median"],
            "mean_padded_batch_s": float(np.mean(np.max(timed_durations, axis=1))),
        },
        "protocol_projection_fdrl": common.protocol_projection(utterances_per_s),
    }


def print_table(results):
    step, heads = results["step_s"], results["heads_step_s"]
    overhead, projection = results["overhead_percent"], results["protocol_projection_fdrl"]
    print(f"{'':28}{'median':>11}{'IQR':>11}{'n':>5}")
    for label, stats in [
        ("FDRL step (s)", step["fdrl"]),
        ("backbones-only step (s)", step["baseline"]),
        ("FDRL heads step (s)", heads["fdrl"]),
        ("baseline head step (s)", heads["baseline"]),
    ]:
        print(f"{label:28}{stats['median']:>11.4g}{stats['iqr']:>11.3g}{stats['n']:>5}")
    print(
        f"ratio FDRL / backbones: {results['ratio_fdrl_over_baseline']['of_medians']:.3f} "
        f"(paired median {results['ratio_fdrl_over_baseline']['paired']['median']:.3f}, "
        f"IQR {results['ratio_fdrl_over_baseline']['paired']['iqr']:.3f})"
    )
    print(
        f"overhead: end-to-end {overhead['end_to_end']:+.2f}%, from heads {overhead['from_heads']:+.3f}% "
        f"(target <= {results['target']['max_overhead_percent']}%: met from heads "
        f"{results['target']['met_from_heads']}, end-to-end {results['target']['met_end_to_end']})"
    )
    print(
        f"FDRL: {results['throughput']['utterances_per_s']['fdrl']:.3g} utterances/s; paper protocol "
        f"({projection['utterances']:,} utterances) ~ {projection['hours']:.4g} h = {projection['days']:.3g} days"
    )


if __name__ == "__main__":
    main()
