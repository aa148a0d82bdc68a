"""Fine-tuning throughput and peak memory on a GPU, and the frozen-backbone extraction rate, for two shapes:

- `paper`: the paper's wav2vec2-base + bert-base (`FDRLConfig()` defaults), random weights built from the configs
  (the Hub is not needed), bf16 autocast, batch 8;
- `whisper_minilm`: Whisper-base's encoder + all-MiniLM-L6-v2 from the `pretrained/` folders `make pretrained`
  writes, the same settings. With `--weights random` only the folders' configs, feature extractor and tokenizer are
  read and the weights are drawn from the configs: the same shapes and the same figures (no step here depends on
  the weights' values), for a machine the 370 MB of weights cannot be copied to.

Per shape: a fine-tuning step is forward + backward + AdamW over every parameter, backbones included (the paper's
regime), on IEMOCAP-like batches (durations from `common.iemocap_durations`, noise audio, random transcripts) built
by the real `FDRLProcessor`; `--warmup` untimed steps, then `--steps` timed ones, each with
`torch.cuda.synchronize`. Recorded: utterances/s (batch size x steps / their seconds, and batch size / the median
step, the steady state without the few slow steps), the step time's statistics, the memory PyTorch's caching
allocator holds after each step (`torch.cuda.memory_reserved`, to tell whether the slow steps are those that grow
it), the peak `torch.cuda.max_memory_allocated` over the steps, and the frozen extraction rate: utterances/s of
`fdrl.training.features.extract_pooled` (the protocol's own extraction, one utterance per forward, eval mode) for
each modality, with the backbones on the device.

    .venv/bin/python bench/bench_gpu.py                  # on a CUDA machine: both shapes, a few minutes
    .venv/bin/python bench/bench_gpu.py --dry_run        # CPU, the tiny preset, 2 steps (what the tests run)
    .venv/bin/python bench/bench_gpu.py --weights random --pretrained_dir DIR  # DIR: the folders without weights
"""

import argparse
import time

import numpy as np
import torch

import common
from common import logger
from configuration_fdrl import FDRLConfig
from fdrl.training.features import extract_pooled
from modeling_fdrl import FDRLModel
from processing_fdrl import FDRLProcessor


WORDS = "i you we they can not believe this that what why happy sad angry okay really so very good news".split()
SHAPES = ("paper", "whisper_minilm")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES, help="What to measure.")
    parser.add_argument("--batch_size", type=int, default=8, help="Utterances per fine-tuning step (paper: 8).")
    parser.add_argument("--steps", type=int, default=20, help="Timed fine-tuning steps per shape.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (allocator, AdamW state).")
    parser.add_argument(
        "--extraction_utterances", type=int, default=200, help="Utterances of the extraction rate (0: not measured)."
    )
    parser.add_argument(
        "--pad_to_multiple_of_s",
        type=float,
        default=None,
        help="Pad each fine-tuning batch's audio to a multiple of this many seconds (the collator's "
        "audio_pad_to_multiple_of_s, as run_fdrl.py --audio_pad_to_multiple_of_s): fewer distinct input shapes.",
    )
    parser.add_argument(
        "--no_cudnn", action="store_true", help="torch.backends.cudnn.enabled = False (a diagnostic, not a setting)."
    )
    parser.add_argument("--pretrained_dir", default=str(common.REPO / "pretrained"), help="`make pretrained`'s.")
    parser.add_argument(
        "--weights",
        default="pretrained",
        choices=["pretrained", "random"],
        help="whisper_minilm's weights: the pretrained folders' own, or drawn from their configs (same shapes).",
    )
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"], help="Where to run.")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"], help="auto: bf16 on cuda.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the weights, durations and transcripts.")
    parser.add_argument(
        "--dry_run", action="store_true", help="CPU, tiny preset shapes, 2 steps and 3 utterances: a smoke test."
    )
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/gpu_<device>.json).")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.steps, args.warmup, args.extraction_utterances = "cpu", 2, 1, 3
    return args


def tiny_whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=37, vocab_size=100, pad_token_id=1, bos_token_id=1,
        eos_token_id=1, decoder_start_token_id=2, max_source_positions=1500,
    )  # fmt: skip


def transcripts(rng, count):
    return [" ".join(rng.choice(WORDS, size=max(1, int(n) - 2))) for n in common.token_counts(rng, count)]


def build_shape(shape, args, rng):
    """(model, processor) of a shape: random weights from configs, or the pretrained folders; tiny with
    --dry_run."""
    from transformers import AutoFeatureExtractor, AutoTokenizer

    from fdrl.presets import TINY, preset_backbone_configs

    torch.manual_seed(args.seed)
    texts = transcripts(rng, 200)
    if shape == "paper":
        if args.dry_run:
            audio, text = preset_backbone_configs("tiny", vocab_size=200, max_position_embeddings=64)
            config = FDRLConfig(audio_config=audio, text_config=text, **TINY["fdrl"])
        else:
            config = FDRLConfig()  # wav2vec2-base + bert-base-uncased
        processor = FDRLProcessor.from_texts(texts, vocab_size=min(config.text_config.vocab_size, 2000))
        return FDRLModel(config), processor
    if args.dry_run:
        audio, text = tiny_whisper_config(), preset_backbone_configs("tiny", 200, 64)[1]
        processor = FDRLProcessor.from_texts(texts, vocab_size=200, audio_config=audio)
        return FDRLModel(FDRLConfig(audio_config=audio, text_config=text, **TINY["fdrl"])), processor
    whisper, minilm = f"{args.pretrained_dir}/whisper-base", f"{args.pretrained_dir}/all-MiniLM-L6-v2"
    processor = FDRLProcessor(AutoFeatureExtractor.from_pretrained(whisper), AutoTokenizer.from_pretrained(minilm))
    if args.weights == "random":
        from transformers import AutoConfig

        config = FDRLConfig(
            audio_config=AutoConfig.from_pretrained(whisper), text_config=AutoConfig.from_pretrained(minilm)
        )
        return FDRLModel(config), processor
    return FDRLModel.from_encoders_pretrained(whisper, minilm), processor


def utterances(rng, count):
    """IEMOCAP-like examples as the collator reads them: 16 kHz noise of drawn durations and a transcript."""
    durations, texts = common.iemocap_durations(rng, count), transcripts(rng, count)
    return [
        {
            "id": f"utt{i}",
            "audio": {"array": (0.1 * rng.standard_normal(int(d * 16000))).astype(np.float32), "sampling_rate": 16000},
            "text": text,
            "label": int(rng.integers(0, 4)),
        }
        for i, (d, text) in enumerate(zip(durations, texts))
    ]


def fine_tuning(model, processor, args, device, dtype, rng):
    """Step seconds and peak memory of forward + backward + AdamW over every parameter."""
    from fdrl.training.trainer import FDRLDataCollator

    model.to(device).train()
    collator = FDRLDataCollator(processor, 128, audio_pad_to_multiple_of_s=args.pad_to_multiple_of_s)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batches = [collator(utterances(rng, args.batch_size)) for _ in range(args.warmup + args.steps)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, reserved = [], []
    for index, batch in enumerate(batches):
        seconds = common.timed_step(model, optimizer, {k: v.to(device) for k, v in batch.items()}, device, dtype, index)
        if index >= args.warmup:
            times.append(seconds)
            reserved.append(torch.cuda.memory_reserved(device) / 2**30 if device.type == "cuda" else None)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "step_s": common.summarize(times),
        "utterances_per_s": args.batch_size * len(times) / sum(times),
        # the steady state without the few slow steps (on the H200: those whose padded length was new)
        "utterances_per_s_at_median_step": args.batch_size / float(np.median(times)),
        "peak_memory_allocated_gib": peak,
        "memory_reserved_gib_after_step": reserved,
        "padded_audio_s": [round(batch_seconds(batch), 3) for batch in batches[args.warmup :]],
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def batch_seconds(batch):
    """The padded duration of a collated batch: samples (wav2vec2) or mel frames (Whisper, 100 per second)."""
    if "input_values" in batch:
        return batch["input_values"].shape[-1] / common.SAMPLING_RATE
    return batch["input_features"].shape[-1] / 100


def extraction(model, processor, args, device, dtype, rng):
    """Utterances/s of the frozen protocol's extraction, per modality, the backbones in eval mode on `device`."""
    model.to(device).eval()
    examples = utterances(rng, args.extraction_utterances)
    rates = {}
    for modality in ("audio", "text"):
        extract_pooled(model, examples[:1], processor, modality, 128)  # warm-up
        common.synchronize(device)
        start = time.perf_counter()
        with common.autocast(device, dtype):
            extract_pooled(model, examples, processor, modality, 128)
        common.synchronize(device)
        rates[modality] = len(examples) / (time.perf_counter() - start)
    rates["both"] = 1.0 / (1.0 / rates["audio"] + 1.0 / rates["text"])
    return {"utterances_per_s": rates, "utterances": len(examples)}


def main(argv=None):
    args = parse_args(argv)
    device, dtype, machine = common.start(args)
    torch.backends.cudnn.enabled = not args.no_cudnn
    rng = np.random.default_rng(args.seed)
    results = {}
    for shape in args.shapes:
        model, processor = build_shape(shape, args, rng)
        logger.info(f"{shape}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters on {device}")
        results[shape] = {
            "fine_tuning": fine_tuning(model, processor, args, device, dtype, rng),
            "frozen_extraction": extraction(model, processor, args, device, dtype, rng)
            if args.extraction_utterances
            else None,
        }
        tuning, extracted = results[shape]["fine_tuning"], results[shape]["frozen_extraction"]
        logger.info(
            f"{shape}: {tuning['utterances_per_s']:.3g} utterances/s fine-tuning "
            f"({tuning['utterances_per_s_at_median_step']:.3g} at the median step), peak "
            f"{tuning['peak_memory_allocated_gib']} GiB; extraction "
            + (f"{extracted['utterances_per_s']['both']:.3g} utterances/s" if extracted else "not measured")
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    settings = {**vars(args), "dtype": dtype}
    output = args.output or common.RESULTS_DIR / f"gpu_{device.type}{'_dry_run' if args.dry_run else ''}.json"
    return common.write_result(output, "bench_gpu.py", machine, settings, results)


if __name__ == "__main__":
    main()
