"""IEMOCAP (speech + transcript) as a 🤗 datasets builder, one split per session.

IEMOCAP is licensed (https://sail.usc.edu/iemocap/): request it, unpack it, and point `data_dir` at
the `IEMOCAP_full_release` folder. datasets 5 no longer runs loading scripts
(`load_dataset("iemocap.py")` fails), so the builder is used as a class:

    from fdrl.data.iemocap import Iemocap, leave_one_session_out, load_iemocap

    dataset = load_iemocap("/data/IEMOCAP_full_release")                  # DatasetDict session1..session5
    fold = leave_one_session_out(dataset, test_session=5)                  # train / validation / test

    builder = Iemocap(config_name="all", data_dir="/data/IEMOCAP_full_release", strip_tags=True)
    builder.download_and_prepare()
    dataset = builder.as_dataset()

Configs (extra keyword arguments: `strip_tags`, `strict`, and `classes`/`merge` for other label sets,
see `IemocapConfig`):
- "4class" (default): label ids ang 0, hap 1 (hap + exc), neu 2, sad 3; every other code dropped.
- "all": every code, ids in the order ang, hap, exc, sad, neu, fru, sur, fea, dis, oth, xxx.

Features: id, audio (Audio, 16 kHz), text (as transcribed, tags such as [LAUGHTER] kept unless
`strip_tags=True`), label (ClassLabel), emotion (the raw code), session (int 1-5), dialog, speaker
("1F" ... "5M": the session and the actor of the turn, so `Ses01F_impro01_M003` is "1M"), gender
("F"/"M"), method ("improvised"/"scripted"), start, end (seconds), valence, arousal, dominance.

What is read, per session N:
    SessionN/dialog/EmoEvaluation/<dialog>.txt       label, times and valence/arousal/dominance
    SessionN/dialog/transcriptions/<dialog>.txt      the text of each utterance
    SessionN/sentences/wav/<dialog>/<utterance>.wav  16 kHz mono audio

Skipped on purpose: the per-evaluator subfolders of EmoEvaluation (Categorical/, Attribute/,
Self-evaluation/), every dot-file (macOS `._*` copies hold binary junk), and transcription lines
that are not utterances (crosstalk ids with `XX`, lines without an id, blank lines). Utterances are
matched to dialogs by exact name, never by prefix (`Ses05M_script01_1` vs `Ses05M_script01_1b`).

Incomplete data (each case is logged as one warning naming the first ids):
- a missing WAV: the utterance is skipped; with `strict=True`, FileNotFoundError naming the path.
- no transcription line for a labelled utterance (or no transcription file): skipped; with
  `strict=True`, ValueError (FileNotFoundError for a missing file).
- an empty transcript: kept with text "" (the audio still carries the label, and the published
  counts are of labelled utterances); never an error.
On a complete release (all five sessions) the counts are compared with the published ones
(4 classes: 5531) and any difference is logged.

Sessions are numbered from 1 without gaps: a folder missing below the highest one found (Session2 of
1, 3, 4, 5) is logged as a warning naming it, and so is a missing Session5 in a folder named
`IEMOCAP_full_release` (the release has five). The demo corpus (`demo_corpus.json` beside the sessions)
is expected to hold the sessions it was written with, whichever they are. A fold whose test session is
missing fails in `leave_one_session_out`. A session without any utterance of the config's classes
gets no split (datasets cannot read back an empty one) and a warning.

The cache: the audio column stores the absolute paths of the WAV files, so the IEMOCAP folder must
stay where it was. The cache is keyed by the config, the path of `data_dir` and `input_fingerprint`:
a hash of the bytes of every EmoEvaluation and transcription file the builder reads and of the names
of the WAV files (the cache holds their paths, not their audio). A corrected label or transcript, or
a WAV added or deleted, therefore gives a new cache folder and a rebuild; the old one stays in the
cache until deleted. Fingerprinting reads those text files and lists the WAV folders on every load:
0.15 s for a layout the size of the release (10k WAVs, 310 text files, 4 MB) on a local disk with a
warm page cache, 2 ms for the test fixture. `load_iemocap(..., rebuild=True)` (`--rebuild_cache
true`) rebuilds even when the fingerprint is unchanged.
"""

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets

from .audio import SAMPLING_RATE
from .builder import LocalFolderBuilder, prepare
from .demo_corpus import STAMP_NAME as DEMO_CORPUS_STAMP
from .manifest import leave_one_session_out


logger = logging.getLogger(__name__)

# Every code of the EmoEvaluation files, in ClassLabel order for the "all" config.
ALL_CLASSES = ("ang", "hap", "exc", "sad", "neu", "fru", "sur", "fea", "dis", "oth", "xxx")
# The usual four-class setup: happiness and excitement merged, every other code dropped.
FOUR_CLASSES = ("ang", "hap", "neu", "sad")
FOUR_CLASS_MERGE = (("exc", "hap"),)

# Published counts of the full release, compared when all five sessions are present.
FULL_RELEASE_4CLASS = {
    "per_class": {"ang": 1103, "hap": 1636, "neu": 1708, "sad": 1084},
    "per_session": {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241},
}
FULL_RELEASE_ALL_TOTAL = 10039

_SESSION_DIR = re.compile(r"^Session(\d+)$")
_EMO_LINE = re.compile(
    r"^\[\s*(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\s*\]\s+(?P<id>\S+)\s+(?P<emotion>\w+)\s+"
    r"\[\s*(?P<valence>[\d.]+)\s*,\s*(?P<arousal>[\d.]+)\s*,\s*(?P<dominance>[\d.]+)\s*\]\s*$"
)
_TRANSCRIPT_LINE = re.compile(r"^(?P<id>\S+)\s+\[[^\]]*\]:(?P<text>.*)$")
# An utterance id is its dialog, then the speaker's letter and the turn number: crosstalk ids
# (`_MXX0`) do not match.
_UTTERANCE_ID = re.compile(r"^(?P<dialog>.+)_(?P<gender>[FM])(?P<turn>\d+)$")
_TAG = re.compile(r"\[[^\]]*\]")

_CITATION = """\
@article{busso2008iemocap,
  title={IEMOCAP: Interactive emotional dyadic motion capture database},
  author={Busso, Carlos and Bulut, Murtaza and Lee, Chi-Chun and Kazemzadeh, Abe and Mower, Emily and Kim, Samuel and Chang, Jeannette N and Lee, Sungbok and Narayanan, Shrikanth S},
  journal={Language resources and evaluation},
  volume={42},
  number={4},
  pages={335--359},
  year={2008}
}
"""


@dataclass
class IemocapConfig(datasets.BuilderConfig):
    """Configuration of the IEMOCAP builder.

    Args:
        classes (`tuple[str]`, defaults to `ALL_CLASSES`):
            ClassLabel names, in label-id order. Codes that are neither a class nor merged into one
            are dropped.
        merge (`tuple[tuple[str, str]]`, defaults to `()`):
            `(code, class)` pairs: utterances labelled `code` get the label `class` (the "4class"
            config merges `("exc", "hap")`). The raw code stays in the `emotion` column.
        strip_tags (`bool`, *optional*, defaults to `False`):
            Remove bracketed tags (`[LAUGHTER]`, `[BREATHING]`, ...) from the text and collapse spaces.
        strict (`bool`, *optional*, defaults to `False`):
            Raise on a missing WAV or transcription line instead of skipping the utterance.
        input_fingerprint (`str`, *optional*, defaults to `""`):
            `input_fingerprint(data_dir)`, set by `Iemocap` itself: being part of the config, it is
            part of the cache folder's name, so changed inputs get a cache of their own.
    """

    classes: tuple = ALL_CLASSES
    merge: tuple = ()
    strip_tags: bool = False
    strict: bool = False
    input_fingerprint: str = ""

    def class_of(self, code):
        """The class name an emotion code is counted as, or `None` if the code is dropped."""
        code = dict(self.merge).get(code, code)
        return code if code in self.classes else None


class Iemocap(LocalFolderBuilder):
    """IEMOCAP utterances with audio, transcript, categorical and dimensional labels."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = IemocapConfig
    BUILDER_CONFIGS = [
        IemocapConfig(
            name="4class",
            version=VERSION,
            classes=FOUR_CLASSES,
            merge=FOUR_CLASS_MERGE,
            description="ang, hap (hap + exc), neu, sad; every other code dropped (5531 utterances).",
        ),
        IemocapConfig(
            name="all",
            version=VERSION,
            classes=ALL_CLASSES,
            description="Every code: " + ", ".join(ALL_CLASSES) + " (10039 utterances).",
        ),
    ]
    DEFAULT_CONFIG_NAME = "4class"

    def input_fingerprint(self, data_dir):
        return input_fingerprint(data_dir)

    def _info(self):
        for code, target in self.config.merge:
            if code not in ALL_CLASSES or target not in self.config.classes:
                raise ValueError(f"merge must map IEMOCAP codes to names in classes, got {(code, target)}")
        unknown = [name for name in self.config.classes if name not in ALL_CLASSES]
        if unknown:
            raise ValueError(f"classes must be IEMOCAP codes ({', '.join(ALL_CLASSES)}), got {unknown}")
        return datasets.DatasetInfo(
            description=__doc__.split("\n")[0],
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "audio": datasets.Audio(sampling_rate=SAMPLING_RATE),
                    "text": datasets.Value("string"),
                    "label": datasets.ClassLabel(names=list(self.config.classes)),
                    "emotion": datasets.Value("string"),
                    "session": datasets.Value("int32"),
                    "dialog": datasets.Value("string"),
                    "speaker": datasets.Value("string"),
                    "gender": datasets.Value("string"),
                    "method": datasets.Value("string"),
                    "start": datasets.Value("float64"),
                    "end": datasets.Value("float64"),
                    "valence": datasets.Value("float32"),
                    "arousal": datasets.Value("float32"),
                    "dominance": datasets.Value("float32"),
                }
            ),
            homepage="https://sail.usc.edu/iemocap/",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        data_dir = _check_data_dir(self.config.data_dir)
        sessions = _find_sessions(data_dir)
        _warn_missing_sessions(data_dir, sessions)
        utterances = [u for s in sessions for u in _read_session(data_dir / f"Session{s}", s)]
        utterances = [u for u in utterances if self.config.class_of(u["emotion"]) is not None]
        utterances = self._attach_files(utterances)
        self._check_counts(utterances, sessions)
        by_session = {s: [u for u in utterances if u["session"] == s] for s in sessions}
        empty = [f"Session{s}" for s in sessions if not by_session[s]]
        if empty:  # datasets cannot read back an empty split
            logger.warning(f"No utterance of the classes {self.config.classes} in {', '.join(empty)}: no split for it")
        return [
            datasets.SplitGenerator(name=f"session{s}", gen_kwargs={"utterances": by_session[s]})
            for s in sessions
            if by_session[s]
        ]

    def _generate_examples(self, utterances):
        for u in utterances:
            text = " ".join(_TAG.sub(" ", u["text"]).split()) if self.config.strip_tags else u["text"]
            yield u["id"], {**u, "text": text, "label": self.config.class_of(u["emotion"])}

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        # Split sizes depend on the local copy, and a rebuild after changing it must not be checked
        # against the sizes cached from before: there is nothing to verify.
        super()._download_and_prepare(dl_manager, datasets.VerificationMode.NO_CHECKS, **prepare_split_kwargs)

    def _attach_files(self, utterances):
        """Add `text` and `audio` to each utterance; skip (or raise on) the incomplete ones."""
        transcripts, kept = {}, []
        no_transcript, no_wav, empty = [], [], []
        for u in utterances:
            transcript_path = u.pop("transcript_path")
            if transcript_path not in transcripts:
                transcripts[transcript_path] = _read_transcripts(transcript_path, u["dialog"], self.config.strict)
            text = transcripts[transcript_path].get(u["id"])
            if text is None:
                if self.config.strict:
                    raise ValueError(f"No transcription line for {u['id']} in {transcript_path}")
                no_transcript.append(u["id"])
                continue
            if not os.path.isfile(u["audio"]):
                if self.config.strict:
                    raise FileNotFoundError(f"WAV file of {u['id']} not found: {u['audio']}")
                no_wav.append(f"{u['id']} ({u['audio']})")
                continue
            if not text:
                empty.append(u["id"])
            kept.append({**u, "text": text})
        if no_wav:
            logger.warning(f"Skipped {len(no_wav)} utterance(s) whose WAV file is missing: {_preview(no_wav)}")
        if no_transcript:
            logger.warning(
                f"Skipped {len(no_transcript)} utterance(s) without a transcription line: {_preview(no_transcript)}"
            )
        if empty:
            logger.warning(f"Kept {len(empty)} utterance(s) with an empty transcript (text ''): {_preview(empty)}")
        return kept

    def _check_counts(self, utterances, sessions):
        """On a complete release, log where the counts differ from the published ones. Only a folder named as the
        release is compared: the demo corpus and other corpora in this layout have counts of their own."""
        if sessions != [1, 2, 3, 4, 5] or Path(self.config.data_dir).name != "IEMOCAP_full_release":
            return
        per_class = Counter(self.config.class_of(u["emotion"]) for u in utterances)
        got = {
            "per_class": {name: per_class[name] for name in self.config.classes},
            "per_session": {s: sum(u["session"] == s for u in utterances) for s in sessions},
        }
        four_class = tuple(self.config.classes) == FOUR_CLASSES and tuple(self.config.merge) == FOUR_CLASS_MERGE
        every_code = tuple(self.config.classes) == ALL_CLASSES and not self.config.merge
        if four_class and got != FULL_RELEASE_4CLASS:
            published = sum(FULL_RELEASE_4CLASS["per_class"].values())
            logger.warning(
                f"{self.config.data_dir} has all five sessions but {len(utterances)} utterances in the four "
                f"classes instead of {published}: got {got}, the full release has {FULL_RELEASE_4CLASS}"
            )
        elif every_code and len(utterances) != FULL_RELEASE_ALL_TOTAL:
            logger.warning(
                f"{self.config.data_dir} has all five sessions but {len(utterances)} utterances "
                f"instead of {FULL_RELEASE_ALL_TOTAL}: got {got}"
            )


def load_iemocap(data_dir, config_name="4class", cache_dir=None, rebuild=False, **config_kwargs):
    """Build (or reuse from the cache) IEMOCAP and return a `DatasetDict` with one split per session.

    Args:
        data_dir (`str` or `Path`): the `IEMOCAP_full_release` folder.
        config_name (`str`, defaults to `"4class"`): `"4class"` or `"all"`.
        cache_dir (`str`, *optional*): the datasets cache (defaults to `HF_DATASETS_CACHE`).
        rebuild (`bool`, defaults to `False`): rebuild the cache even if it looks current.
        config_kwargs: `strip_tags`, `strict`, `classes`, `merge` (see `IemocapConfig`).
    """
    builder = Iemocap(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **config_kwargs)
    return prepare(builder, rebuild)


def _check_data_dir(data_dir):
    if data_dir is None:
        raise ValueError("Iemocap needs data_dir: the path of the IEMOCAP_full_release folder")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"IEMOCAP data_dir does not exist or is not a folder: {data_dir}")
    return data_dir


def input_fingerprint(data_dir):
    """A hash of what the cached dataset is built from: the bytes of every EmoEvaluation and transcription file
    the builder reads, and the relative path of every WAV file (the cache stores WAV paths, so only their presence
    matters; `fdrl.data.validation` reads the audio itself before training)."""
    digest = hashlib.sha256()
    for session_dir in sorted(p for p in Path(data_dir).iterdir() if p.is_dir() and _SESSION_DIR.match(p.name)):
        for folder in ("EmoEvaluation", "transcriptions"):
            for path in _listing(session_dir / "dialog" / folder, ".txt"):
                digest.update(f"{path.relative_to(data_dir)}\0{path.stat().st_size}\0".encode())
                digest.update(path.read_bytes())
        for dialog_dir in _listing(session_dir / "sentences" / "wav", None):
            for path in _listing(dialog_dir, ".wav"):
                digest.update(f"{path.relative_to(data_dir)}\0".encode())
    return digest.hexdigest()[:16]


def _listing(folder, suffix):
    """Sorted entries of `folder` (files with `suffix`, or subfolders when it is None), dot-files left out."""
    if not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        kept = [
            Path(entry.path)
            for entry in entries
            if not entry.name.startswith(".")
            and (entry.is_dir() if suffix is None else entry.is_file() and entry.name.endswith(suffix))
        ]
    return sorted(kept)


def _find_sessions(data_dir):
    sessions = sorted(
        int(match.group(1)) for path in data_dir.iterdir() if path.is_dir() and (match := _SESSION_DIR.match(path.name))
    )
    if not sessions:
        nested = (data_dir / "IEMOCAP_full_release").is_dir()
        hint = " (did you mean its IEMOCAP_full_release subfolder?)" if nested else ""
        raise FileNotFoundError(
            f"No Session1..Session5 folder in {data_dir}{hint}; data_dir must be the IEMOCAP_full_release folder"
        )
    return sessions


def _warn_missing_sessions(data_dir, sessions):
    """Sessions are numbered from 1 without gaps (the release has 1-5; a demo corpus the ones it was written with)."""
    expected = set(range(1, max(sessions) + 1))
    stamp = data_dir / DEMO_CORPUS_STAMP
    if stamp.is_file():
        try:
            expected = set(json.loads(stamp.read_text())["settings"]["sessions"])
        except (ValueError, KeyError, TypeError):
            logger.warning(f"{stamp} is not a demo corpus stamp; expecting sessions 1 to {max(sessions)}")
    elif data_dir.name == "IEMOCAP_full_release":
        expected |= {1, 2, 3, 4, 5}
    missing = sorted(expected - set(sessions))
    if missing:
        found = ", ".join(f"Session{s}" for s in sessions)
        logger.warning(
            f"{', '.join(f'Session{s}' for s in missing)} missing from {data_dir} (found {found}); a fold that tests "
            "on a missing session cannot run"
        )


def _read_session(session_dir, session):
    """Every labelled utterance of one session, from the dialog files directly in EmoEvaluation/."""
    emo_dir = session_dir / "dialog" / "EmoEvaluation"
    if not emo_dir.is_dir():
        raise FileNotFoundError(f"No EmoEvaluation folder in {session_dir}: expected {emo_dir}")
    utterances = []
    for path in sorted(emo_dir.iterdir()):
        # Subfolders (Categorical/, Attribute/, Self-evaluation/) and macOS `._*` files are not dialogs.
        if path.name.startswith(".") or path.suffix != ".txt" or not path.is_file():
            continue
        utterances += _read_emo_evaluation(path, session)
    return utterances


def _read_emo_evaluation(path, session):
    dialog = path.stem
    session_dir = path.parents[2]
    utterances = []
    for line_number, line in enumerate(_read_lines(path), start=1):
        if not line.startswith("["):  # header, evaluator lines (C-E2:, A-E3:, ...), blank lines
            continue
        match = _EMO_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{line_number}: unexpected line {line!r}")
        utterance_id, emotion = match.group("id"), match.group("emotion")
        turn = _UTTERANCE_ID.match(utterance_id)
        if turn is None or turn.group("dialog") != dialog:
            raise ValueError(f"{path}:{line_number}: {utterance_id!r} is not an utterance of dialog {dialog}")
        if emotion not in ALL_CLASSES:
            known = ", ".join(ALL_CLASSES)
            raise ValueError(f"{path}:{line_number}: unknown emotion code {emotion!r} (known: {known})")
        utterances.append(
            {
                "id": utterance_id,
                "audio": str(session_dir / "sentences" / "wav" / dialog / f"{utterance_id}.wav"),
                "emotion": emotion,
                "session": session,
                "dialog": dialog,
                # The speaker is the actor of this turn, not the one named by the dialog (Ses01F).
                "speaker": f"{session}{turn.group('gender')}",
                "gender": turn.group("gender"),
                "method": "improvised" if "_impro" in dialog else "scripted",
                "start": float(match.group("start")),
                "end": float(match.group("end")),
                "valence": float(match.group("valence")),
                "arousal": float(match.group("arousal")),
                "dominance": float(match.group("dominance")),
                "transcript_path": session_dir / "dialog" / "transcriptions" / f"{dialog}.txt",
            }
        )
    return utterances


def _read_transcripts(path, dialog, strict):
    """`{utterance id: text}` of one dialog; crosstalk, id-less and other dialogs' lines are skipped."""
    if not path.is_file():
        if strict:
            raise FileNotFoundError(f"Transcription file of dialog {dialog} not found: {path}")
        return {}
    transcripts = {}
    for line in _read_lines(path):
        match = _TRANSCRIPT_LINE.match(line)
        if match is None:
            continue
        turn = _UTTERANCE_ID.match(match.group("id"))
        if turn is not None and turn.group("dialog") == dialog:
            transcripts.setdefault(match.group("id"), match.group("text").strip())
    return transcripts


def _read_lines(path):
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # a stray Latin-1 byte in a transcript should not stop the build
        text = raw.decode("latin-1")
    return text.splitlines()


def _preview(items, limit=5):
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


__all__ = [
    "ALL_CLASSES",
    "FOUR_CLASSES",
    "Iemocap",
    "IemocapConfig",
    "leave_one_session_out",
    "load_iemocap",
]
