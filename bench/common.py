"""What the benchmarks share: the machine record, IEMOCAP-like inputs, summary statistics and the JSON writer."""

import datetime
import json
import logging
import math
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from fdrl.data.audio import SAMPLING_RATE  # noqa: F401 (the benchmarks read common.SAMPLING_RATE)


REPO = Path(__file__).resolve().parents[1]

logger = logging.getLogger("bench")

RESULTS_DIR = REPO / "bench" / "results"
MAX_DURATION = 16.0  # FDRLProcessor truncates longer audio
# IEMOCAP's four-class utterances: mean 4.55 s, median 3.58 s, p95 11.1 s, p99 15.6 s, max 34.1 s.
# A lognormal with the same median and mean: mu = ln(median), sigma^2 = 2 ln(mean / median). It gives
# p95 = 11.2 s and p99 = 17.9 s (15.6 s in IEMOCAP); MAX_DURATION clips the tail as the processor does.
DURATION_MU = math.log(3.58)
DURATION_SIGMA = math.sqrt(2.0 * math.log(4.55 / 3.58))
MIN_DURATION = 0.5  # IEMOCAP's shortest utterances last about 0.6 s
MEAN_TOKENS = 20  # [CLS] + about 18 WordPieces + [SEP]
# The paper's protocol: 5 leave-one-session-out folds x 100 epochs x ~4,425 training utterances.
PROTOCOL = {"folds": 5, "epochs": 100, "train_utterances_per_fold": 4425}
PROTOCOL_UTTERANCES = PROTOCOL["folds"] * PROTOCOL["epochs"] * PROTOCOL["train_utterances_per_fold"]


def alternating(repeats):
    """The order of an old-against-new benchmark's runs: old, new, new, old, old, new, ...: each tree first in every
    other pair, since this machine's speed drifts within a benchmark by more than many of the gains measured."""
    pairs = [("old", "new") if index % 2 == 0 else ("new", "old") for index in range(repeats)]
    return [label for pair in pairs for label in pair]


def setup_logging():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def start(args):
    """Every benchmark's first steps: logging, torch threads, device and dtype, the seed, the machine record."""
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    torch.manual_seed(args.seed)
    return device, dtype, machine_info(device)


def iemocap_durations(rng, count):
    """`count` utterance durations in seconds drawn from the IEMOCAP-fitted lognormal, clipped to [0.5, 16]."""
    durations = rng.lognormal(DURATION_MU, DURATION_SIGMA, size=count)
    return np.clip(durations, MIN_DURATION, MAX_DURATION)


def token_counts(rng, count):
    """Transcript lengths in tokens ([CLS] and [SEP] included): 2 + Poisson(18), mean 20."""
    return 2 + rng.poisson(MEAN_TOKENS - 2, size=count)


def duration_batches(rng, batch_size, num_batches, group_by_length=False):
    """Durations of `num_batches` batches, (num_batches, batch_size).

    With `group_by_length`, batches come from mega-batches of 50 x batch_size utterances sorted by duration,
    as transformers' length-grouped sampler builds them, so each batch pads less.
    """
    if not group_by_length:
        return iemocap_durations(rng, num_batches * batch_size).reshape(num_batches, batch_size)
    pool = np.sort(iemocap_durations(rng, 50 * batch_size)).reshape(50, batch_size)
    return pool[rng.choice(50, size=num_batches, replace=num_batches > 50)]


def make_batch(durations, tokens, vocab_size, num_labels, generator):
    """Random model inputs padded as FDRLProcessor pads them: normalised noise for speech, random token ids."""
    samples = [int(round(seconds * SAMPLING_RATE)) for seconds in durations]
    batch_size, max_samples, max_tokens = len(samples), max(samples), int(max(tokens))
    input_values = torch.zeros(batch_size, max_samples)
    audio_attention_mask = torch.zeros(batch_size, max_samples, dtype=torch.long)
    input_ids = torch.zeros(batch_size, max_tokens, dtype=torch.long)  # [PAD] = 0
    text_attention_mask = torch.zeros_like(input_ids)
    for i, (n_samples, n_tokens) in enumerate(zip(samples, tokens)):
        input_values[i, :n_samples] = torch.randn(n_samples, generator=generator)
        audio_attention_mask[i, :n_samples] = 1
        input_ids[i, :n_tokens] = torch.randint(5, vocab_size, (int(n_tokens),), generator=generator)
        text_attention_mask[i, :n_tokens] = 1
    return {
        "input_values": input_values,
        "audio_attention_mask": audio_attention_mask,
        "input_ids": input_ids,
        "text_attention_mask": text_attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.randint(0, num_labels, (batch_size,), generator=generator),
    }


def tiny_fdrl_config():
    """Backbones and heads of the `tiny` preset (`fdrl.presets.TINY`, the test suite's sizes too), for `--tiny`
    smoke runs."""
    from configuration_fdrl import FDRLConfig
    from fdrl.presets import TINY, preset_backbone_configs

    audio, text = preset_backbone_configs("tiny", vocab_size=99, max_position_embeddings=64)
    return FDRLConfig(audio_config=audio, text_config=text, **TINY["fdrl"])


def resolve_device_dtype(device, dtype):
    """`dtype="auto"`: bf16 autocast on CUDA, fp32 on CPU (this kind of CPU has no bf16 units)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch.cuda.is_available() is False")
    if dtype == "auto":
        dtype = "bf16" if device == "cuda" else "fp32"
    return torch.device(device), dtype


def autocast(device, dtype):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(model, optimizer, batch, device, dtype, seed):
    """Seconds of one forward + backward + AdamW step, its random draws (layerdrop, dropout, SpecAugment) seeded
    with `seed`, so two models timed on the same batch draw alike."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    synchronize(device)
    start = time.perf_counter()
    with autocast(device, dtype):
        loss = model(**batch)["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start


def summarize(values):
    """Median, quartiles and IQR of a list of timings (seconds), with the raw values."""
    values = [float(v) for v in values]
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "iqr": float(q3 - q1),
        "p90": float(np.percentile(values, 90)),
        "mean": float(np.mean(values)),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def protocol_projection(utterances_per_second):
    """Wall time of the paper's full protocol at this training throughput."""
    seconds = PROTOCOL_UTTERANCES / utterances_per_second
    return {
        **PROTOCOL,
        "utterances": PROTOCOL_UTTERANCES,
        "epoch_hours": PROTOCOL["train_utterances_per_fold"] / utterances_per_second / 3600,
        "hours": seconds / 3600,
        "days": seconds / 86400,
    }


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    """`$BENCH_GIT_COMMIT` where set (a copy of the tree on a lent GPU machine, whose `.git` may be another
    commit's), else HEAD of the repository."""
    if os.environ.get("BENCH_GIT_COMMIT"):
        return os.environ["BENCH_GIT_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info(device):
    """Where and with what the figures were measured."""
    import transformers

    from fdrl.training.parallel import usable_cores

    info = {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable_cores(),
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_result(path, script, machine, settings, results):
    """Write one benchmark's JSON: script, date, machine, settings and figures."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {**machine, "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    payload = {
        "script": script,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": settings,
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    logger.info(f"wrote {path}")
    return payload
