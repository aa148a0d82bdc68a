"""Inference latency and throughput of FDRLModel (eval mode, torch.inference_mode).

Latency: one utterance of 4.5 s audio and 20 tokens, median and p90 over repeats. Throughput: the same
IEMOCAP-like utterances batched at several batch sizes (each batch padded to its longest), in utterances/s and
audio seconds/s.

    .venv/bin/python bench/bench_inference.py                       # base shapes, CPU, about 4 minutes
    .venv/bin/python bench/bench_inference.py --device cuda --batch_sizes 1 8 32 64
"""

import argparse
import time

import numpy as np
import torch

import common
from common import logger
from configuration_fdrl import FDRLConfig
from modeling_fdrl import FDRLModel


LATENCY_SECONDS, LATENCY_TOKENS = 4.5, 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency_repeats", type=int, default=10, help="Timed single-utterance forwards.")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 8], help="Throughput batch sizes.")
    parser.add_argument(
        "--throughput_repeats",
        type=int,
        default=2,
        help="Batches of the largest batch size; smaller sizes time the same utterances.",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="Untimed forwards before the latency repeats; each batch size gets one more.",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="Where to run.")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="bf16 runs under torch.autocast; auto: bf16 on cuda, fp32 on cpu.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the durations and inputs.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--tiny", action="store_true", help="Tiny backbones (smoke test), not base shapes.")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/inference_<device>.json).")
    return parser.parse_args(argv)


def timed_forward(model, batch, device, dtype):
    common.synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode(), common.autocast(device, dtype):
        model(**batch)
    common.synchronize(device)
    return time.perf_counter() - start


def measure(model, batches, warmup, device, dtype):
    """Seconds per batch: `warmup` untimed forwards on the first batch, then one timed forward per batch."""
    batches = [{key: value.to(device) for key, value in batch.items()} for batch in batches]
    for _ in range(warmup):
        timed_forward(model, batches[0], device, dtype)
    return [timed_forward(model, batch, device, dtype) for batch in batches]


def main(argv=None):
    args = parse_args(argv)
    device, dtype, machine = common.start(args)

    # Model: FDRLConfig() defaults are wav2vec2-base and bert-base-uncased shapes, randomly initialised
    config = common.tiny_fdrl_config() if args.tiny else FDRLConfig()
    model = FDRLModel(config).to(device).eval()
    vocab_size, num_labels = config.text_config.vocab_size, config.num_labels
    generator = torch.Generator().manual_seed(args.seed)

    # Latency: one 4.5 s utterance with 20 tokens
    single = common.make_batch([LATENCY_SECONDS], [LATENCY_TOKENS], vocab_size, num_labels, generator)
    single.pop("labels")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    latency = common.summarize(measure(model, [single] * args.latency_repeats, args.warmup, device, dtype))
    logger.info(f"latency: median {latency['median'] * 1e3:.1f} ms, p90 {latency['p90'] * 1e3:.1f} ms")
    results = {"latency_s": latency, "throughput": {}}

    # Throughput: the same IEMOCAP-like utterances at every batch size, each batch padded to its longest
    rng = np.random.default_rng(args.seed)
    pool_size = max(args.batch_sizes) * args.throughput_repeats
    pool_durations, pool_tokens = common.iemocap_durations(rng, pool_size), common.token_counts(rng, pool_size)
    for batch_size in args.batch_sizes:
        count = pool_size // batch_size * batch_size
        durations = pool_durations[:count].reshape(-1, batch_size)  # (batches, batch_size)
        tokens = pool_tokens[:count].reshape(-1, batch_size)
        batches = [common.make_batch(d, t, vocab_size, num_labels, generator) for d, t in zip(durations, tokens)]
        for batch in batches:
            batch.pop("labels")
        times = measure(model, batches, 1, device, dtype)
        stats = common.summarize(times)
        results["throughput"][str(batch_size)] = {
            "batch_s": stats,
            "utterances": count,
            "utterances_per_s": count / sum(times),
            "audio_seconds_per_s": float(durations.sum()) / sum(times),
            "mean_padded_batch_s": float(durations.max(axis=1).mean()),
        }
        logger.info(
            f"batch {batch_size}: {results['throughput'][str(batch_size)]['utterances_per_s']:.3g} "
            f"utterances/s (median batch {stats['median']:.2f} s)"
        )
    if device.type == "cuda":
        results["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30

    settings = {
        "shapes": "tiny" if args.tiny else "wav2vec2-base + bert-base-uncased (random init)",
        "latency_input": {"audio_s": LATENCY_SECONDS, "tokens": LATENCY_TOKENS},
        "latency_repeats": args.latency_repeats,
        "batch_sizes": args.batch_sizes,
        "throughput_repeats": args.throughput_repeats,
        "warmup": args.warmup,
        "dtype": dtype,
        "seed": args.seed,
        "mode": "model.eval() under torch.inference_mode(), no labels",
    }
    output = args.output or common.RESULTS_DIR / f"inference_{device.type}.json"
    payload = common.write_result(output, "bench_inference.py", machine, settings, results)
    print_table(results)
    return payload


def print_table(results):
    latency = results["latency_s"]
    print(
        f"latency, 1 x {LATENCY_SECONDS} s + {LATENCY_TOKENS} tokens: median {latency['median'] * 1e3:.1f} ms, "
        f"p90 {latency['p90'] * 1e3:.1f} ms (n={latency['n']})"
    )
    print(f"{'batch':>6}{'utterances/s':>14}{'audio s/s':>11}{'median batch s':>16}")
    for batch_size, row in results["throughput"].items():
        print(
            f"{batch_size:>6}{row['utterances_per_s']:>14.3g}{row['audio_seconds_per_s']:>11.3g}"
            f"{row['batch_s']['median']:>16.3g}"
        )


if __name__ == "__main__":
    main()
