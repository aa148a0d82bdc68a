#!/usr/bin/env python
"""Synthesise a small spoken emotion corpus with espeak-ng, written in IEMOCAP's layout.

IEMOCAP is licensed, so the demo trains on this stand-in instead. It goes through the same
datasets builder as the real corpus because it is written exactly like `IEMOCAP_full_release`:

    <output_dir>/IEMOCAP_demo/
        demo_corpus.json                                   # settings + counts (the "done" stamp)
        Session1/
            sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav      # 16 kHz mono 16-bit PCM
            dialog/EmoEvaluation/Ses01F_impro01.txt
            dialog/transcriptions/Ses01F_impro01.txt
        Session2/ ...

Design (from a feasibility study on a 2-core CPU, which measured what the demo needs):
- two speakers per session, each with its own espeak-ng voice (en-us+f1..f5, en-us+m1..m5);
- the 4 classes ang/hap/neu/sad balanced and stratified per session; about a fifth of the hap
  class is labelled `exc` (spoken like hap; the 4-class mapping merges it into hap), and ~5%
  each of `fru` and `xxx` are added on top (the 4-class mapping drops them);
- prosody per utterance drawn from overlapping per-class normals of espeak-ng's pitch (-p),
  speaking rate (-s) and amplitude (-a): mostly arousal (ang/hap fast and loud, neu/sad slow
  and soft), pitch splitting ang from hap somewhat. No `-z`: the trailing pause tracks the rate;
- words: exactly half of each class and session speaks a sentence from a VALENCE bank (positive
  for hap/exc, one negative bank shared by ang and sad, a calm bank for neu), the other half a
  neutral sentence shared by all classes. Text alone then cannot split ang from sad, audio alone
  cannot split ang from hap well: fusion is needed.

The same seed gives byte-identical files whatever the number of workers.

    python -m fdrl.data.demo_corpus --output_dir demo_data [--seed 0] [--sessions 1,2,3,4,5]
        [--utterances_per_session 100] [--workers 2] [--overwrite]
"""

import argparse
import functools
import json
import logging
import multiprocessing
import shutil
import struct
import subprocess
import time
import wave
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fdrl.data.audio import SAMPLING_RATE


logger = logging.getLogger(__name__)

# Bump when the generated content changes, so that stale corpora are regenerated.
CORPUS_VERSION = 1
CORPUS_NAME = "IEMOCAP_demo"
STAMP_NAME = "demo_corpus.json"
CLASSES = ("ang", "hap", "neu", "sad")
TURNS_PER_DIALOG = 12
FOUR_CLASS = {"ang": "ang", "hap": "hap", "exc": "hap", "neu": "neu", "sad": "sad"}  # fru, xxx dropped

# (mean, standard deviation) of espeak-ng's pitch 0-99, words per minute, amplitude 0-200.
# Amplitudes stay low enough that espeak-ng (nearly) never clips: clipping would be a cue of its own.
PROSODY = {
    "ang": {"pitch": (58, 12), "speed": (188, 20), "amplitude": (100, 10)},
    "hap": {"pitch": (72, 12), "speed": (180, 20), "amplitude": (95, 10)},
    "neu": {"pitch": (46, 12), "speed": (148, 20), "amplitude": (80, 10)},
    "sad": {"pitch": (36, 12), "speed": (130, 20), "amplitude": (70, 10)},
    "fru": {"pitch": (50, 12), "speed": (168, 20), "amplitude": (90, 10)},
}
PROSODY["exc"] = PROSODY["hap"]
PROSODY_LIMITS = {"pitch": (0, 99), "speed": (90, 300), "amplitude": (30, 120)}

# Mean valence, activation, dominance on IEMOCAP's 1-5 scale.
VAD_MEANS = {
    "ang": (1.9, 3.8, 3.8),
    "hap": (4.0, 3.2, 3.1),
    "exc": (3.9, 3.7, 3.3),
    "neu": (2.9, 2.4, 2.7),
    "sad": (2.0, 2.2, 2.3),
    "fru": (2.0, 3.2, 3.2),
    "xxx": (2.6, 2.9, 2.9),
}
EVALUATOR_LABELS = {
    "ang": "Anger",
    "hap": "Happiness",
    "exc": "Excited",
    "neu": "Neutral",
    "sad": "Sadness",
    "fru": "Frustration",
}

# The sentence banks live in demo_sentences.json, next to this module:
# - positive: spoken by hap and exc;
# - negative: shared by ang, sad and fru: bad news that fits anger as well as sadness;
# - calm: neutral valence, spoken only by neu: plain facts and arrangements;
# - shared: by every class: conversational lines that fit any emotion.
_BANK_FILE = Path(__file__).with_name("demo_sentences.json")
_SENTENCES = json.loads(_BANK_FILE.read_text(encoding="utf-8"))
POSITIVE_SENTENCES = tuple(_SENTENCES["positive"])
NEGATIVE_SENTENCES = tuple(_SENTENCES["negative"])
CALM_SENTENCES = tuple(_SENTENCES["calm"])
SHARED_SENTENCES = tuple(_SENTENCES["shared"])

VALENCE_BANK = {
    "hap": "positive",
    "exc": "positive",
    "ang": "negative",
    "sad": "negative",
    "fru": "negative",
    "neu": "calm",
}
BANKS = {
    "positive": POSITIVE_SENTENCES,
    "negative": NEGATIVE_SENTENCES,
    "calm": CALM_SENTENCES,
    "shared": SHARED_SENTENCES,
}


@dataclass
class Utterance:
    """One planned turn: what to say, how, and (after synthesis) when."""

    utterance_id: str
    dialog: str
    session: int
    speaker: str  # "F" or "M"
    label: str
    emotional_text: bool
    text: str = ""
    prosody: dict = field(default_factory=dict)
    gap: float = 0.0  # silence before the turn, seconds
    evaluations: list = field(default_factory=list)
    vad: tuple = ()
    num_samples: int = 0
    start: float = 0.0
    end: float = 0.0


# ----------------------------------------------------------------------------- planning


def label_counts(utterances_per_session):
    """Labels of one session: the 4 classes balanced (hap includes exc), plus fru and xxx."""
    if utterances_per_session < len(CLASSES):
        raise ValueError(f"utterances_per_session must be at least {len(CLASSES)}, got {utterances_per_session}")
    per_class = [utterances_per_session // 4 + (i < utterances_per_session % 4) for i in range(4)]
    counts = dict(zip(CLASSES, per_class))
    counts["exc"] = max(1, round(counts["hap"] / 5)) if counts["hap"] > 1 else 0
    counts["hap"] -= counts["exc"]
    counts["fru"] = counts["xxx"] = max(1, round(utterances_per_session / 20))
    return counts


def _class_group(labels, session, rng):
    """Stratify one class group: exactly half emotional text, speakers alternating within each half."""
    order = rng.permutation(len(labels))
    # An odd group gets its extra emotional sentence in odd sessions only.
    num_emotional = len(labels) // 2 + (len(labels) % 2) * (session % 2)
    first_speaker = int(rng.integers(2))
    turns = []
    for rank, index in enumerate(order):
        emotional = rank < num_emotional
        half_rank = rank if emotional else rank - num_emotional
        speaker = "FM"[(half_rank + first_speaker) % 2]
        turns.append((labels[index], emotional, speaker))
    return turns


def _session_turns(session, utterances_per_session, rng):
    counts = label_counts(utterances_per_session)
    groups = [
        ["ang"] * counts["ang"],
        ["exc"] * counts["exc"] + ["hap"] * counts["hap"],
        ["neu"] * counts["neu"],
        ["sad"] * counts["sad"],
        ["fru"] * counts["fru"],
        ["xxx"] * counts["xxx"],
    ]
    return [turn for labels in groups for turn in _class_group(labels, session, rng)]


class _SentencePicker:
    """Draws sentences from each bank in shuffled rounds, so a session repeats as little as possible."""

    def __init__(self, rng):
        self.rng = rng
        self.queues = {name: [] for name in BANKS}

    def __call__(self, bank):
        if not self.queues[bank]:
            self.queues[bank] = [BANKS[bank][i] for i in self.rng.permutation(len(BANKS[bank]))]
        return self.queues[bank].pop()


def _draw_prosody(label, rng):
    if label == "xxx":  # no agreement: spoken like any of the four classes
        label = CLASSES[int(rng.integers(len(CLASSES)))]
    prosody = {}
    for name, (mean, std) in PROSODY[label].items():
        low, high = PROSODY_LIMITS[name]
        prosody[name] = int(np.clip(round(rng.normal(mean, std)), low, high))
    return prosody


def _draw_text(label, emotional, pick, rng):
    if not emotional:
        return pick("shared")
    if label == "xxx":
        return pick(("positive", "negative", "calm")[int(rng.integers(3))])
    return pick(VALENCE_BANK[label])


def _draw_evaluations(label, rng):
    """Three categorical and two dimensional evaluator lines; [V, A, D] is the dimensional mean."""
    if label == "xxx":  # no majority among the evaluators
        names = rng.choice(["Anger", "Frustration", "Neutral", "Sadness", "Happiness"], 3, replace=False)
    else:
        neighbour = {"exc": "Happiness", "hap": "Excited", "ang": "Frustration", "fru": "Anger"}
        odd_one = neighbour.get(label, "Neutral" if label != "neu" else "Frustration")
        names = [EVALUATOR_LABELS[label]] * 2 + [odd_one if rng.random() < 0.3 else EVALUATOR_LABELS[label]]
    lines = [f"C-E{i + 2}:\t{name};\t()" for i, name in enumerate(names)]
    scores = np.clip(np.round(rng.normal(VAD_MEANS[label], 0.6, size=(2, 3))), 1, 5).astype(int)
    for i, (val, act, dom) in enumerate(scores):
        lines.append(f"A-E{i + 2}:\tval {val}; act {act}; dom  {dom};\t()")
    return lines, tuple(float(v) for v in scores.mean(axis=0))


def _dialog_names(session, num_dialogs):
    """IEMOCAP-style names: Ses01F_impro01, Ses01M_impro01, Ses01F_script01_1, Ses01M_script01_1, ..."""
    names = []
    for index in range(num_dialogs):
        pair = index // 2
        if pair % 2 == 0:
            kind = f"impro{pair // 2 + 1:02d}"
        else:
            kind = f"script{pair // 4 + 1:02d}_{(pair // 2) % 2 + 1}"
        names.append(f"Ses{session:02d}{'FM'[index % 2]}_{kind}")
    return names


def _split(items, parts):
    """`parts` consecutive runs of near-equal length."""
    return [items[i * len(items) // parts : (i + 1) * len(items) // parts] for i in range(parts)]


def _interleave(female, male, female_first):
    """Alternate the two speakers' turns, the rest of the longer list at the end."""
    first, second = (female, male) if female_first else (male, female)
    turns = []
    for i in range(max(len(first), len(second))):
        turns += first[i : i + 1] + second[i : i + 1]
    return turns


def plan_session(session, utterances_per_session, seed):
    """Every utterance of one session; a session's content does not depend on the other sessions."""
    rng = np.random.default_rng([seed, session])
    pick = _SentencePicker(rng)
    turns = _session_turns(session, utterances_per_session, rng)
    shuffled = [turns[i] for i in rng.permutation(len(turns))]
    num_dialogs = max(1, round(len(turns) / TURNS_PER_DIALOG))
    runs = {speaker: _split([t for t in shuffled if t[2] == speaker], num_dialogs) for speaker in "FM"}
    utterances = []
    for d, dialog in enumerate(_dialog_names(session, num_dialogs)):
        dialog_turns = _interleave(runs["F"][d], runs["M"][d], rng.random() < 0.5)
        turn_number = Counter()
        for label, emotional, speaker in dialog_turns:
            evaluations, vad = _draw_evaluations(label, rng)
            utterance = Utterance(
                utterance_id=f"{dialog}_{speaker}{turn_number[speaker]:03d}",
                dialog=dialog,
                session=session,
                speaker=speaker,
                label=label,
                emotional_text=emotional,
                text=_draw_text(label, emotional, pick, rng),
                prosody=_draw_prosody(label, rng),
                gap=float(rng.uniform(2.0, 6.0) if turn_number.total() == 0 else rng.uniform(0.3, 1.8)),
                evaluations=evaluations,
                vad=vad,
            )
            turn_number[speaker] += 1
            utterances.append(utterance)
    return utterances


def voice_of(session, speaker):
    """Distinct espeak-ng voice variants per session and speaker: en-us+f1..f5, en-us+m1..m5."""
    return f"en-us+{speaker.lower()}{(session - 1) % 5 + 1}"


# ----------------------------------------------------------------------------- synthesis


# torch is imported where it is used: a run that finds its corpus complete, or that only plans,
# then starts at once instead of after torch's few seconds of import.
def _init_worker():
    import torch

    # Two workers on two cores: more threads each only makes them fight (30 s instead of 5 s).
    torch.set_num_threads(1)


def _parse_espeak_wav(raw):
    """(sampling rate, int16 samples) from espeak-ng's --stdout WAV, whose size fields are bogus."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise RuntimeError(f"espeak-ng did not write a WAV stream (got {raw[:12]!r})")
    position, rate = 12, None
    while position + 8 <= len(raw):
        chunk, size = raw[position : position + 4], struct.unpack("<I", raw[position + 4 : position + 8])[0]
        if chunk == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", raw[position + 8 : position + 24])
            if channels != 1 or bits != 16:
                raise RuntimeError(f"expected mono 16-bit audio from espeak-ng, got {channels} channels, {bits} bits")
        elif chunk == b"data":
            data = raw[position + 8 :]
            return rate, np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
        position += 8 + size + (size & 1)
    raise RuntimeError("espeak-ng's WAV stream has no data chunk")


@functools.cache
def _resampler(rate):
    import torchaudio

    return torchaudio.transforms.Resample(rate, SAMPLING_RATE)  # computes its kernel once


def synthesize(job):
    """Speak one utterance and write it as 16 kHz mono 16-bit PCM; returns the number of samples."""
    import torch

    path, voice, prosody, text = job
    command = ["espeak-ng", "-v", voice, "-p", str(prosody["pitch"]), "-s", str(prosody["speed"])]
    command += ["-a", str(prosody["amplitude"]), "--stdout", text]
    raw = subprocess.run(command, check=True, capture_output=True).stdout
    rate, samples = _parse_espeak_wav(raw)
    audio = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    audio = _resampler(rate)(audio)
    pcm = torch.clamp(torch.round(audio * 32768.0), -32768, 32767).to(torch.int16).numpy()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLING_RATE)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return len(pcm)


def _synthesize_all(jobs, workers):
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # same arithmetic as in a worker process, so the same bytes
        try:
            return [synthesize(job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    # spawn: a forked copy of a process that already ran torch can hang in OpenMP.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        return list(pool.map(synthesize, jobs, chunksize=8))


# ----------------------------------------------------------------------------- writing


def _wav_path(root, utterance):
    session_dir = root / f"Session{utterance.session}"
    return session_dir / "sentences" / "wav" / utterance.dialog / f"{utterance.utterance_id}.wav"


def _assign_times(utterances):
    """Consecutive, non-overlapping [start, end] within each dialog, from the real durations."""
    clock = {}
    for utterance in utterances:
        utterance.start = clock.get(utterance.dialog, 0.0) + utterance.gap
        utterance.end = utterance.start + utterance.num_samples / SAMPLING_RATE
        clock[utterance.dialog] = utterance.end


def _write_dialog_texts(root, dialog_utterances):
    first = dialog_utterances[0]
    dialog_dir = root / f"Session{first.session}" / "dialog"
    evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]"]
    transcription = []
    for u in dialog_utterances:
        vad = ", ".join(f"{v:.4f}" for v in u.vad)
        evaluation += ["", f"[{u.start:.4f} - {u.end:.4f}]\t{u.utterance_id}\t{u.label}\t[{vad}]", *u.evaluations]
        transcription.append(f"{u.utterance_id} [{u.start:08.4f}-{u.end:08.4f}]: {u.text}")
    for folder, lines in (("EmoEvaluation", evaluation), ("transcriptions", transcription)):
        (dialog_dir / folder).mkdir(parents=True, exist_ok=True)
        (dialog_dir / folder / f"{first.dialog}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _espeak_version():
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(
            "espeak-ng is not installed; it speaks the demo corpus. Install it with "
            "`apt-get install espeak-ng` (or `make system-deps`)."
        )
    version = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    return version.split("Data at")[0].strip()  # drop the data path, which differs between machines


def _settings(seed, sessions, utterances_per_session):
    return {
        "corpus_version": CORPUS_VERSION,
        "seed": seed,
        "sessions": list(sessions),
        "utterances_per_session": utterances_per_session,
    }


def _is_complete(root, settings):
    stamp = root / STAMP_NAME
    if not stamp.is_file():
        return False
    manifest = json.loads(stamp.read_text())
    if manifest.get("settings") != settings:
        return False
    return len(list(root.glob("Session*/sentences/wav/*/*.wav"))) == manifest.get("num_utterances")


def _summary(utterances, seconds):
    durations = np.array([u.num_samples / SAMPLING_RATE for u in utterances])
    emotional = Counter(FOUR_CLASS.get(u.label, u.label) for u in utterances if u.emotional_text)
    per_session = {
        str(session): dict(sorted(Counter(u.label for u in utterances if u.session == session).items()))
        for session in sorted({u.session for u in utterances})
    }
    return {
        "num_utterances": len(utterances),
        "label_counts": dict(sorted(Counter(u.label for u in utterances).items())),
        "label_counts_per_session": per_session,
        "emotional_text_per_class": dict(sorted(emotional.items())),
        "total_duration_s": round(float(durations.sum()), 2),
        "duration_s": {
            "min": round(float(durations.min()), 2),
            "mean": round(float(durations.mean()), 2),
            "max": round(float(durations.max()), 2),
        },
        "generation_s": round(seconds, 1),
    }


def _log_summary(root, manifest):
    logger.info("demo corpus at %s (%s)", root, manifest["espeak_ng"])
    for session, counts in manifest["label_counts_per_session"].items():
        logger.info("  Session%s: %s", session, "  ".join(f"{label} {n}" for label, n in counts.items()))
    durations = manifest["duration_s"]
    logger.info(
        "  %d utterances, %.0f s of speech (%.2f-%.2f s, mean %.2f s), made in %.1f s",
        manifest["num_utterances"],
        manifest["total_duration_s"],
        durations["min"],
        durations["max"],
        durations["mean"],
        manifest["generation_s"],
    )


def _check_arguments(sessions, utterances_per_session, workers):
    if not sessions or len(set(sessions)) != len(sessions) or not all(1 <= s <= 99 for s in sessions):
        raise ValueError(f"sessions must be distinct numbers from 1 to 99, got {sessions}")
    label_counts(utterances_per_session)  # raises on too few
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")


def make_demo_corpus(
    output_dir, seed=0, sessions=(1, 2, 3, 4, 5), utterances_per_session=100, workers=2, overwrite=False
):
    """Write the espeak-ng demo corpus under `output_dir/IEMOCAP_demo` and return that folder.

    A folder already complete for the same settings is kept as it is unless `overwrite`.
    """
    sessions = tuple(int(s) for s in sessions)
    _check_arguments(sessions, utterances_per_session, workers)
    espeak_version = _espeak_version()
    root = Path(output_dir) / CORPUS_NAME
    settings = _settings(seed, sessions, utterances_per_session)
    if not overwrite and _is_complete(root, settings):
        logger.info("demo corpus at %s is complete for these settings; not regenerating", root)
        return root
    if root.exists() and not overwrite and not (root / STAMP_NAME).is_file():
        raise FileExistsError(f"{root} exists and was not written by this script; pass --overwrite to replace it")

    # Plan every utterance (all randomness), then synthesise, then write the texts.
    started = time.perf_counter()
    partial = Path(output_dir) / f".{CORPUS_NAME}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    utterances = [u for session in sessions for u in plan_session(session, utterances_per_session, seed)]
    jobs = [(str(_wav_path(partial, u)), voice_of(u.session, u.speaker), u.prosody, u.text) for u in utterances]
    for utterance, num_samples in zip(utterances, _synthesize_all(jobs, workers)):
        utterance.num_samples = num_samples
    _assign_times(utterances)
    for dialog in dict.fromkeys(u.dialog for u in utterances):
        _write_dialog_texts(partial, [u for u in utterances if u.dialog == dialog])

    # Stamp last and swap the finished folder in, so an interrupted run is never taken as complete.
    summary = _summary(utterances, time.perf_counter() - started)
    manifest = {"settings": settings, "espeak_ng": espeak_version, **summary}
    (partial / STAMP_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    _log_summary(root, manifest)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="Folder to write IEMOCAP_demo/ into.")
    parser.add_argument("--seed", type=int, default=0, help="Same seed, byte-identical corpus.")
    parser.add_argument("--sessions", default="1,2,3,4,5", help="Comma-separated session numbers.")
    parser.add_argument(
        "--utterances_per_session",
        type=int,
        default=100,
        help="Utterances per session in the 4 classes (about 10%% fru and xxx come on top).",
    )
    parser.add_argument("--workers", type=int, default=2, help="Synthesis processes, one torch thread each.")
    parser.add_argument("--overwrite", action="store_true", help="Regenerate even if a complete corpus is there.")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    try:
        make_demo_corpus(
            args.output_dir,
            seed=args.seed,
            sessions=[int(s) for s in args.sessions.split(",") if s.strip()],
            utterances_per_session=args.utterances_per_session,
            workers=args.workers,
            overwrite=args.overwrite,
        )
    except (RuntimeError, ValueError, FileExistsError) as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
