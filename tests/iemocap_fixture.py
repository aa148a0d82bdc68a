"""A tiny fake IEMOCAP_full_release, in the exact layout of the real one, for tests.

`make_iemocap_fixture(root)` writes `root/IEMOCAP_full_release` and returns what a correct loader
must find there. Everything is deterministic (a seeded generator), so tests may hard-code numbers
for a given set of arguments; the returned `expected` counts are the general source of truth.

What the folder holds, per session N:

    SessionN/dialog/EmoEvaluation/<dialog>.txt          the labels (header, blocks, evaluator lines)
    SessionN/dialog/EmoEvaluation/Categorical/...       per-evaluator files a loader must skip
    SessionN/dialog/EmoEvaluation/Attribute/...         (same)
    SessionN/dialog/EmoEvaluation/Self-evaluation/...   (same)
    SessionN/dialog/transcriptions/<dialog>.txt         utterances, plus crosstalk (`_MXX0`),
                                                        id-less (`M: [BREATHING]`) and blank lines
    SessionN/sentences/wav/<dialog>/<utterance>.wav     16-bit mono sine + noise, 0.5-1.5 s
    ._* files with binary junk next to the text and WAV files, and a .DS_Store (macOS copies)

Traps for a loader: the suffixed dialog pairs `Ses03M_impro05a`/`Ses03M_impro05b` and
`Ses05M_script01_1`/`Ses05M_script01_1b` (the latter pair shares utterance numbers, so matching by
prefix gives `_1` the transcripts and WAVs of `_1b`); utterances spoken by the actor who did not
wear the markers (`Ses01F_impro01_M000` is speaker "1M"); CRLF line endings in session 4; and, with
`defects=True`, one missing WAV (session 2), one empty transcript (session 3) and one utterance with
no transcription line (session 4), each on an utterance of the four classes.
"""

import wave
from pathlib import Path

import numpy as np


# Codes cycle in this order over the utterances, so every code occurs (given >= 11 utterances).
EMOTION_CODES = ("neu", "ang", "hap", "sad", "exc", "fru", "sur", "fea", "dis", "oth", "xxx")
# The builder's fixed label orders, repeated here on purpose (the fixture states facts independently).
ALL_CLASSES = ("ang", "hap", "exc", "sad", "neu", "fru", "sur", "fea", "dis", "oth", "xxx")
FOUR_CLASSES = ("ang", "hap", "neu", "sad")
FOUR_CLASS_MAP = {"ang": "ang", "hap": "hap", "exc": "hap", "neu": "neu", "sad": "sad"}

DEFAULT_DIALOGS = {
    1: ("Ses01F_impro01", "Ses01M_script01_1"),
    2: ("Ses02F_impro02", "Ses02M_script02_2"),
    3: ("Ses03M_impro05a", "Ses03M_impro05b", "Ses03F_script01_1"),
    4: ("Ses04F_impro03", "Ses04M_script03_2"),
    5: ("Ses05M_script01_1", "Ses05M_script01_1b", "Ses05F_impro07"),
}

# 13 sentences against 11 codes: text and label vary independently. Tags and double spaces test
# `strip_tags`.
SENTENCES = (
    "Excuse me.",
    "Do you have your forms?",
    "Yeah.",
    "Let me see them.",
    "Is there a problem?",
    "Who told you to get in this line?",
    "You did.",
    "I'm sorry [LAUGHTER] that's  not right.",
    "[BREATHING] Okay.",
    "Fine, thank you.",
    "I can't believe this happened again.",
    "Well, [GARBAGE] we could go to the beach.",
    "That is wonderful news!",
)

# Tone per code, so that a model can learn something from the audio of the fixture.
TONE_HZ = {"ang": 440.0, "hap": 330.0, "exc": 350.0, "neu": 220.0, "sad": 165.0}
VAD_VALUES = (1.5, 2.0, 2.3333, 2.5, 3.0, 3.6667, 4.5)

# A macOS AppleDouble header followed by bytes that are not UTF-8.
APPLEDOUBLE_JUNK = (
    b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\t\x00\x00\x002"
    b"\x00\x00\x0e\xb0\x00\x00\x00\x02\x00\x00\x0e\xe2\x00\x00\x01\x1e" + b"\x00" * 24 + b"ATTR\xff\xfe\xc3\x28\x80"
)


def make_iemocap_fixture(
    root: Path | str,
    sessions: tuple = (1, 2, 3, 4, 5),
    utterances_per_dialog: int = 4,
    dialogs: dict | None = None,
    defects: bool = True,
    sampling_rate: int = 16000,
    min_seconds: float = 0.5,
    max_seconds: float = 1.5,
    seed: int = 0,
) -> dict:
    """Write `root/IEMOCAP_full_release` and return what a loader must find in it.

    Args:
        root (`Path` or `str`): folder to write into (created if needed).
        sessions (`tuple[int]`, defaults to all five): which SessionN folders to write.
        utterances_per_dialog (`int`, defaults to 4): turns per dialog, alternating F000, M000, F001, ...
        dialogs (`dict[int, tuple[str]]`, *optional*): dialog names per session; defaults to
            `DEFAULT_DIALOGS` (with the suffixed pairs).
        defects (`bool`, defaults to `True`): one missing WAV, one empty transcript, one missing
            transcription line (see the module docstring).
        sampling_rate (`int`, defaults to 16000): of the WAV files.
        min_seconds, max_seconds (`float`): range of the utterance durations.
        seed (`int`): seeds durations, tones' noise and dimensional values.

    Returns:
        `dict` with
        - `data_dir` (`Path`): the IEMOCAP_full_release folder (pass it as `data_dir`).
        - `sessions` (`tuple[int]`), `dialogs` (`dict[int, tuple[str]]`).
        - `utterances` (`dict[str, dict]`): every labelled utterance written, in file order, keyed by
          id, with the builder's fields (`id, dialog, session, speaker, gender, method, emotion,
          text, start, end, valence, arousal, dominance`) plus `label_4class` (or `None`),
          `num_samples`, `duration`, `wav` (`Path`), `has_wav`, `has_transcript`.
        - `missing_wav`, `empty_transcript`, `missing_transcript` (`list[str]`): the defect ids.
        - `expected` (`dict`): for "4class" and "all", what the (non-strict) builder yields:
          `total`, `per_class` (every class name, in ClassLabel order, zeros included),
          `per_session` (`{session: count}`), `ids` (`{session: [ids]}`, in the builder's order:
          dialogs sorted by name, turns in file order).
    """
    if utterances_per_dialog < 1:
        raise ValueError(f"utterances_per_dialog must be >= 1, got {utterances_per_dialog}")
    dialogs = {s: tuple(dialogs[s]) for s in sessions} if dialogs else {s: DEFAULT_DIALOGS[s] for s in sessions}
    data_dir = Path(root) / "IEMOCAP_full_release"
    rng = np.random.default_rng(seed)

    # Plan every utterance first, then choose the defects, then write.
    utterances = {}
    index = 0
    for session in sessions:
        for dialog in dialogs[session]:
            clock = 1.0 + round(float(rng.uniform(0.0, 2.0)), 4)
            for turn in range(utterances_per_dialog):
                letter, number = "FM"[turn % 2], turn // 2
                utterance_id = f"{dialog}_{letter}{number:03d}"
                code = EMOTION_CODES[index % len(EMOTION_CODES)]
                duration = round(float(rng.uniform(min_seconds, max_seconds)), 4)
                start = round(clock, 4)
                end = round(start + duration, 4)
                clock = end + float(rng.uniform(0.2, 1.0))
                valence, arousal, dominance = (float(v) for v in rng.choice(VAD_VALUES, size=3))
                utterances[utterance_id] = {
                    "id": utterance_id,
                    "dialog": dialog,
                    "session": session,
                    "speaker": f"{session}{letter}",
                    "gender": letter,
                    "method": "improvised" if "_impro" in dialog else "scripted",
                    "emotion": code,
                    "label_4class": FOUR_CLASS_MAP.get(code),
                    "text": SENTENCES[index % len(SENTENCES)],
                    "start": start,
                    "end": end,
                    "valence": valence,
                    "arousal": arousal,
                    "dominance": dominance,
                    "duration": duration,
                    "num_samples": int(round(duration * sampling_rate)),
                    "wav": data_dir / f"Session{session}" / "sentences" / "wav" / dialog / f"{utterance_id}.wav",
                    "has_wav": True,
                    "has_transcript": True,
                }
                index += 1

    missing_wav, empty_transcript, missing_transcript = [], [], []
    if defects:
        chosen = set()
        for offset, bucket in ((1, missing_wav), (2, empty_transcript), (3, missing_transcript)):
            session = sessions[offset % len(sessions)]
            for u in utterances.values():
                if u["session"] == session and u["label_4class"] and u["id"] not in chosen:
                    bucket.append(u["id"])
                    chosen.add(u["id"])
                    break
        for utterance_id in missing_wav:
            utterances[utterance_id]["has_wav"] = False
        for utterance_id in empty_transcript:
            utterances[utterance_id]["text"] = ""
        for utterance_id in missing_transcript:
            utterances[utterance_id]["has_transcript"] = False

    data_dir.mkdir(parents=True, exist_ok=True)
    (Path(root) / "._IEMOCAP_full_release").write_bytes(APPLEDOUBLE_JUNK)
    for session in sessions:
        _write_session(data_dir, session, dialogs[session], utterances, rng, sampling_rate)

    return {
        "data_dir": data_dir,
        "sessions": tuple(sessions),
        "dialogs": dialogs,
        "utterances": utterances,
        "missing_wav": missing_wav,
        "empty_transcript": empty_transcript,
        "missing_transcript": missing_transcript,
        "expected": {
            "4class": _expected(utterances, sessions, FOUR_CLASSES, lambda u: u["label_4class"]),
            "all": _expected(utterances, sessions, ALL_CLASSES, lambda u: u["emotion"]),
        },
    }


def _expected(utterances, sessions, class_names, label_of):
    kept = [u for u in utterances.values() if label_of(u) and u["has_wav"] and u["has_transcript"]]
    kept.sort(key=lambda u: u["dialog"])  # the builder's order: dialogs by name, turns in file order
    per_class = {name: 0 for name in class_names}
    for u in kept:
        per_class[label_of(u)] += 1
    ids = {s: [u["id"] for u in kept if u["session"] == s] for s in sessions}
    return {
        "total": len(kept),
        "per_class": per_class,
        "per_session": {s: len(ids[s]) for s in sessions},
        "ids": ids,
    }


def _write_session(data_dir, session, dialogs, utterances, rng, sampling_rate):
    session_dir = data_dir / f"Session{session}"
    emo_dir = session_dir / "dialog" / "EmoEvaluation"
    transcript_dir = session_dir / "dialog" / "transcriptions"
    for folder in (emo_dir / "Categorical", emo_dir / "Attribute", emo_dir / "Self-evaluation", transcript_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (session_dir / ".DS_Store").write_bytes(APPLEDOUBLE_JUNK)
    newline = "\r\n" if session == 4 else "\n"

    for dialog in dialogs:
        turns = [u for u in utterances.values() if u["dialog"] == dialog]
        _write_text(emo_dir / f"{dialog}.txt", _emo_evaluation(turns), newline)
        _write_text(transcript_dir / f"{dialog}.txt", _transcription(dialog, turns), newline)
        for name in (f"{dialog}.txt", f"{dialog}_e1_cat.txt"):
            (emo_dir / f"._{name}").write_bytes(APPLEDOUBLE_JUNK)
        (transcript_dir / f"._{dialog}.txt").write_bytes(APPLEDOUBLE_JUNK)
        # Per-evaluator files, in their own formats: a loader that globs **/*.txt trips on them.
        for evaluator in ("e1", "e2"):
            lines = [f"{u['id']} :Neutral state; ()" for u in turns]
            _write_text(emo_dir / "Categorical" / f"{dialog}_{evaluator}_cat.txt", lines, newline)
        (emo_dir / "Categorical" / f"._{dialog}_e1_cat.txt").write_bytes(APPLEDOUBLE_JUNK)
        lines = [f"{u['id']} :act 2; val 3; dom  2; ()" for u in turns]
        _write_text(emo_dir / "Attribute" / f"{dialog}_e3_atr.txt", lines, newline)
        lines = [f"{u['id']} :Frustration; ()" for u in turns]
        _write_text(emo_dir / "Self-evaluation" / f"{dialog}_e6_cat.txt", lines, newline)

        wav_dir = session_dir / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True, exist_ok=True)
        for u in turns:
            if u["has_wav"]:
                _write_wav(u["wav"], u, rng, sampling_rate)
        (wav_dir / f"._{turns[0]['id']}.wav").write_bytes(APPLEDOUBLE_JUNK)


def _emo_evaluation(turns):
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for u in turns:
        lines += [
            f"[{u['start']:.4f} - {u['end']:.4f}]\t{u['id']}\t{u['emotion']}\t"
            f"[{u['valence']:.4f}, {u['arousal']:.4f}, {u['dominance']:.4f}]",
            "C-E2:\tNeutral;\t()",
            "C-E3:\tAnger; Frustration;\t(annoyed)",
            "C-F1:\tNeutral;\t(curious)",
            "A-E3:\tval 3; act 2; dom  2;\t()",
            "A-F1:\tval 3; act 2; dom  1;\t(mildly aggravated but staying polite, attitude)",
            "",
        ]
    return lines


def _transcription(dialog, turns):
    lines = []
    for position, u in enumerate(turns):
        if u["has_transcript"]:
            lines.append(f"{u['id']} [{u['start']:08.4f}-{u['end']:08.4f}]: {u['text']}".rstrip())
        if position == 1:  # crosstalk, a line without an id, and a blank line
            lines += [
                f"{dialog}_MXX0 [{u['start']:08.4f}-{u['end']:08.4f}]: [overlap] Hmm.",
                f"{dialog}_FXX1 [{u['start']:08.4f}-{u['end']:08.4f}]: Right.",
                "M: [BREATHING]",
                "",
            ]
    return lines


def _write_text(path, lines, newline):
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))


def _write_wav(path, utterance, rng, sampling_rate):
    t = np.arange(utterance["num_samples"]) / sampling_rate
    tone = TONE_HZ.get(utterance["emotion"], 262.0)
    signal = 0.3 * np.sin(2 * np.pi * tone * t) + 0.02 * rng.standard_normal(t.shape)
    pcm = (np.clip(signal, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sampling_rate)
        f.writeframes(pcm.tobytes())
