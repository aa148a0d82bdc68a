"""Word error rate of a speech recogniser on a corpus: `fdrl-wer` (or `python -m fdrl.evaluation.asr`).

    fdrl-wer --model pretrained/whisper-base --data_dir demo_data/IEMOCAP_demo --sessions 5
    fdrl-wer --model openai/whisper-base --manifest my_corpus.csv --output wer.json
    fdrl-wer --model pretrained/whisper-base --backend faster-whisper --data_dir demo_data/IEMOCAP_demo

The recogniser is transformers' "automatic-speech-recognition" pipeline on the model's standard window (30 s for
Whisper), or with `--backend faster-whisper` the same weights through CTranslate2 (int8, CPU:
`pretrained/whisper-base-ct2`, see `fdrl.inference.recognizer`); both decode greedily. WER is jiwer's corpus word error rate (edit operations summed over the corpus, over the reference words),
after a light normalisation of both sides (lowercase, punctuation removed except apostrophes inside words,
whitespace collapsed), so "Hello, world!" and "hello world" count as the same.

Every argument is checked before the first utterance is transcribed (exit status 2, one message): `--model` must be
a speech recogniser (an FDRL emotion model, a missing folder or a damaged weights file is refused), `--sessions`
must exist in the corpus, `--limit` must be positive, `--output` must be a file name in an existing folder. Every
selected utterance then goes through training's audio check (`fdrl.data.validation`: unreadable, truncated, empty,
NaN or too short for the recogniser); a bad one is skipped, counted and named in the log and in the output
(`skipped`), never transcribed nor counted in the WER. Exit status 1 when no utterance is left.
"""

import argparse
import json
import logging
import re
import time
from pathlib import Path

import jiwer

from fdrl.data.audio import decode_audio


logger = logging.getLogger(__name__)

_NOT_WORD = re.compile(r"[^\w']+|(?<!\w)'|'(?!\w)")


def normalize_text(text):
    """Lowercase, punctuation to spaces (apostrophes inside words kept: "can't"), single spaces."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def word_error_rate(references, hypotheses, normalize=True):
    """
    Corpus word error rate: (substitutions + deletions + insertions) / reference words, summed over the pairs.

    Args:
        references (`list[str]`): the true transcripts.
        hypotheses (`list[str]`): the recogniser's, in the same order.
        normalize (`bool`, *optional*, defaults to `True`): apply [`normalize_text`] to both first.

    Returns:
        `dict`: `wer`, `substitutions`, `deletions`, `insertions`, `reference_words`, `utterances`.
    """
    if isinstance(references, str) or isinstance(hypotheses, str):
        raise ValueError("references and hypotheses must be lists of str, not str")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if normalize:
        references, hypotheses = [normalize_text(r) for r in references], [normalize_text(h) for h in hypotheses]
    words = sum(len(r.split()) for r in references)
    if words == 0:
        raise ValueError("the references hold no words")
    output = jiwer.process_words(references, hypotheses)
    return {
        "wer": (output.substitutions + output.deletions + output.insertions) / words,
        "substitutions": output.substitutions,
        "deletions": output.deletions,
        "insertions": output.insertions,
        "reference_words": words,
        "utterances": len(references),
    }


def transcribe(recogniser, examples):
    """The recogniser's text for each `{"audio": {"array", "sampling_rate"} or decoder, ...}` example."""
    texts = []
    for index, example in enumerate(examples):
        array, rate = decode_audio(example["audio"], example.get("id", index))
        if array.ndim > 1:
            array = array.mean(0)  # mono
        texts.append(recogniser({"raw": array.astype("float32"), "sampling_rate": rate})["text"].strip())
    return texts


def _check_arguments(args):
    """Every argument, before the corpus or the recogniser is loaded; returns the fewest samples it reads."""
    from transformers import AutoConfig

    from pipeline_fdrl import check_model_folder
    from processing_fdrl import minimum_samples

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number of utterances, got {args.limit}")
    if args.output:
        output = Path(args.output)
        if output.is_dir():
            raise ValueError(f"--output {output} is a folder: give a file name such as {output / 'wer.json'}")
        if not output.parent.is_dir():
            raise ValueError(f"--output {output}: the folder {output.parent} does not exist")
    if Path(args.model, "model.bin").is_file():  # a CTranslate2 Whisper folder (faster-whisper): no transformers config
        from transformers import WhisperConfig

        return minimum_samples(WhisperConfig())
    try:
        check_model_folder(args.model, fdrl=False)
        config = AutoConfig.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {args.model}: {error}") from None
    if config.model_type == "fdrl":  # a Hub id: only its config tells
        raise ValueError(f"--model {args.model} is an FDRL emotion model (model_type fdrl), not a speech recogniser")
    return minimum_samples(config)


def _load_examples(args, min_samples):
    """The selected utterances with usable audio, and the bad ones (`BadAudio`), skipped."""
    from fdrl.data.validation import find_bad_audio

    if args.manifest:
        from fdrl.data.manifest import load_manifest

        data = load_manifest(args.manifest)
    else:
        from fdrl.data.iemocap import load_iemocap

        data = load_iemocap(args.data_dir, config_name=args.dataset_config)
    splits = list(data.values()) if hasattr(data, "values") else [data]
    column = "session" if "session" in splits[0].column_names else "fold"
    available = sorted({session for split in splits for session in split[column][:]})
    unknown = sorted(set(args.sessions or []) - set(available))
    if unknown:
        raise ValueError(
            f"--sessions {' '.join(map(str, unknown))}: the corpus has no such session (its sessions: "
            f"{', '.join(map(str, available))})"
        )
    examples, skipped = [], []
    for split in splits:
        if args.sessions:
            split = split.select([i for i, s in enumerate(split[column][:]) if s in args.sessions])
        bad = find_bad_audio(split, min_samples)
        bad_ids = {item.id for item in bad}
        skipped += bad
        examples += list(split.select([i for i, u in enumerate(split["id"][:]) if u not in bad_ids]))  # decodes
    return (examples[: args.limit] if args.limit else examples), skipped


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fdrl-wer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A speech-recognition model folder or Hub id.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="A corpus in IEMOCAP's layout (the demo corpus, or IEMOCAP itself).")
    source.add_argument("--manifest", help="A CSV / JSON-lines manifest (see fdrl/data/manifest.py).")
    parser.add_argument("--dataset_config", default="4class", help="IEMOCAP builder config: '4class' or 'all'.")
    parser.add_argument("--sessions", type=int, nargs="*", help="Only these sessions (e.g. the test sessions).")
    parser.add_argument("--limit", type=int, default=None, help="At most this many utterances.")
    parser.add_argument("--output", default=None, help="Write the WER and every transcript to this JSON file.")
    parser.add_argument(
        "--backend",
        default="transformers",
        choices=("transformers", "faster-whisper", "auto"),
        help="transformers' pipeline (default), faster-whisper (CTranslate2 folder, or "
        "pretrained/whisper-base with its -ct2 twin), or auto (faster-whisper on the CPU when "
        "a CTranslate2 folder is at hand).",
    )
    parser.add_argument("--compute_type", default="int8", help="faster-whisper's weight type: int8 or float32.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from fdrl.inference.recognizer import load_recognizer

    try:
        examples, skipped = _load_examples(args, _check_arguments(args))
    except (OSError, ValueError) as error:  # a missing manifest or corpus folder is an OSError
        logger.error(f"fdrl-wer: {error}")
        return 2
    if skipped:
        logger.warning(
            f"skipped {len(skipped)} utterance(s) with unusable audio: "
            + "; ".join(map(str, skipped[:10]))
            + ("; ..." if len(skipped) > 10 else "")
        )
    if not examples:
        logger.error("fdrl-wer: no utterance with usable audio to transcribe")
        return 1
    recogniser = load_recognizer(args.model, backend=args.backend, device="cpu", compute_type=args.compute_type)
    start = time.perf_counter()
    hypotheses = transcribe(recogniser, examples)
    seconds = time.perf_counter() - start
    references = [example["text"] for example in examples]
    result = {
        **word_error_rate(references, hypotheses),
        "seconds_per_utterance": seconds / max(len(examples), 1),
        "model": args.model,
        "skipped": [vars(item) for item in skipped],
        "backend": recogniser.backend,
        "compute_type": args.compute_type if recogniser.backend == "faster-whisper" else "float32",
    }
    logger.info(
        f"WER {100 * result['wer']:.1f}% over {result['utterances']} utterances "
        f"({result['reference_words']} words), {result['seconds_per_utterance']:.2f} s per utterance"
    )
    if args.output:
        items = [
            {"id": example.get("id"), "reference": r, "hypothesis": h}
            for example, r, h in zip(examples, references, hypotheses)
        ]
        Path(args.output).write_text(json.dumps({**result, "items": items}, indent=2) + "\n")
    return 0


__all__ = ["normalize_text", "transcribe", "word_error_rate"]


if __name__ == "__main__":
    raise SystemExit(main())
