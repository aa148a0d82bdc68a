"""MELD (speech + transcript of the Friends series) as a 🤗 datasets builder, with its official splits.

MELD (Poria et al., ACL 2019, https://github.com/declare-lab/MELD): multi-party dialogues, every utterance labelled
with one of seven emotions and one of three sentiments. Download `MELD.Raw.tar.gz` (the link is in the MELD README),
unpack it and the three archives inside it, and point `data_dir` at the `MELD.Raw` folder:

    MELD.Raw/train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv   labels and transcripts, one row per utterance
    MELD.Raw/train/train_splits/dia{D}_utt{U}.mp4                       from train.tar.gz
    MELD.Raw/dev_splits_complete/dia{D}_utt{U}.mp4                      from dev.tar.gz
    MELD.Raw/output_repeated_splits_test/dia{D}_utt{U}.mp4              from test.tar.gz

(`train_splits/`, `dev/dev_splits_complete/` and `test/output_repeated_splits_test/` are found too.) datasets 5 no
longer runs loading scripts, so the builder is used as a class:

    from fdrl.data.meld import Meld, load_meld

    dataset = load_meld("/data/MELD.Raw")          # DatasetDict train / validation (MELD's dev) / test

Features: id (`train/dia0_utt0`, `dev/dia0_utt0`, `test/dia0_utt0`: MELD's own split name, then the name of the
video; dialogue and utterance numbers restart in every split, so the split keeps the ids unique), audio (Audio,
16 kHz mono, decoded from the video's audio track and stored in the cache as 16-bit WAV bytes), text (the
`Utterance` column), label (ClassLabel, `EMOTIONS` order: neutral, joy, surprise, anger, sadness, disgust, fear, the
order of the MELD paper), speaker, dialogue_id, utterance_id (int), sentiment ("neutral", "positive", "negative").
The text is the CSV's, its runs of white space (line breaks included) made single spaces.

Every utterance's audio track is decoded once, when the cache is built (torchcodec, the decoder `datasets` uses for
audio, resampling to 16 kHz and mixing down to mono), and checked with `fdrl.data.validation.check_samples`; the
training-time audio check then reads the WAV bytes like any other dataset's.

The release's quirks, with the MELD repository's issue threads that report them, and what the builder does (every
case is counted and named in one warning per split; none is silent):
- `train_splits/dia125_utt3.mp4` cannot be decoded (MELD issues 39 and 52): an utterance whose video fails to
  decode, or whose audio track is missing, empty or not finite, is skipped. With `strict=True`, the build stops
  (datasets' DatasetGenerationError, caused by a ValueError naming the video).
- CSV rows without a video, such as dev `dia110_utt7` (issues 22 and 27): skipped. With `strict=True`,
  FileNotFoundError.
- Videos without a CSV row (`dia66_utt9` in dev, `dia108_utt2` in test, issue 22; the maintainers: "safe to ignore
  those files") and the test folder's `final_videos_test*.mp4` (issue 22): not utterances, counted, not used.
- Hidden files (`._dia0_utt0.mp4`, the macOS AppleDouble copies that archives made on a Mac carry, and `.DS_Store`;
  no issue thread found names them, users report them in the test folder): not utterances, counted, not used.
- The CSVs are not clean UTF-8 in places: the MELD repository converted eight Windows-1252 characters (`\\x92` for a
  right quote, `\\x85`, `\\x91`, `\\x93`, `\\x94`, `\\x96`, `\\x97`, and `\\xa0`) in its copies of the CSVs (pull
  request 28), and a byte that is not UTF-8 (a raw cp1252 byte) may still be in a user's copy. Bytes that are not
  UTF-8 are read as Windows-1252 (the lines are named in a warning), and the C1 control characters U+0080..U+009F
  that such text leaves behind in UTF-8 files are mapped through Windows-1252 too (U+0092 -> "’"), a no-break space
  to a space; the rows whose text was repaired are counted and named.
- An empty `Utterance` is kept with text "" (the audio still carries the label).
Other problems stop the build with an error naming the file and line: a missing CSV or video folder, a missing
column, an emotion or sentiment outside MELD's sets, a Dialogue_ID/Utterance_ID that is not an integer, the same
dialogue and utterance twice in one CSV.

Counts: `load_meld` compares every split with the published sizes (train 9,989, dev 1,109, test 2,610 utterances in
1,039, 114 and 280 dialogues, the MELD README) on every load, cached or not, and logs what differs: the numbers, and
the CSV rows absent from the dataset. (Only the fixture in MELD's layout was read here, not the release itself.)

The cache: the audio is stored in the cache (32 kB per second: 16 kHz, 16-bit, mono; from the published average of
3.59 s, about 1.6 GB for the release's 13,708 utterances), so `MELD.Raw` may move after the build. The cache is keyed
by the config, the path of `data_dir` and `input_fingerprint`: a hash of the bytes of the three CSVs and of the name,
size and modification time of every file in the three video folders (reading every video on every load would cost
as much as decoding them). A changed CSV or a replaced video (the re-cut `dia125_utt3.mp4` of issue 39, for
instance) gives a new cache folder and a rebuild; `load_meld(..., rebuild=True)` rebuilds even when the fingerprint
is unchanged.
"""

import csv
import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import soundfile

from .audio import SAMPLING_RATE
from .builder import LocalFolderBuilder, prepare
from .validation import check_samples


logger = logging.getLogger(__name__)

# ClassLabel order: the order of the MELD paper's emotion table.
EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS = ("neutral", "positive", "negative")

# (DatasetDict split, MELD's split name, CSV, video folders in the order they are looked for)
SPLITS = (
    ("train", "train", "train_sent_emo.csv", ("train/train_splits", "train_splits")),
    ("validation", "dev", "dev_sent_emo.csv", ("dev_splits_complete", "dev/dev_splits_complete")),
    ("test", "test", "test_sent_emo.csv", ("output_repeated_splits_test", "test/output_repeated_splits_test")),
)
ARCHIVES = {"train": "train.tar.gz", "dev": "dev.tar.gz", "test": "test.tar.gz"}
# Published sizes (MELD README): utterances and dialogues per split.
PUBLISHED_UTTERANCES = {"train": 9989, "dev": 1109, "test": 2610}
PUBLISHED_DIALOGUES = {"train": 1039, "dev": 114, "test": 280}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")

_VIDEO = re.compile(r"^dia(?P<dialogue>\d+)_utt(?P<utterance>\d+)\.mp4$")
_C1 = re.compile("[\u0080-\u009f\u00a0]")

_CITATION = """\
@inproceedings{poria2019meld,
  title={MELD: A Multimodal Multi-Party Dataset for Emotion Recognition in Conversations},
  author={Poria, Soujanya and Hazarika, Devamanyu and Majumder, Navonil and Naik, Gautam and Cambria, Erik and Mihalcea, Rada},
  booktitle={Proceedings of the 57th Annual Meeting of the Association for Computational Linguistics},
  pages={527--536},
  year={2019}
}
"""


@dataclass
class MeldConfig(datasets.BuilderConfig):
    """Configuration of the MELD builder.

    Args:
        strict (`bool`, *optional*, defaults to `False`):
            Raise on a CSV row without a video, or a video whose audio cannot be decoded, instead of skipping it.
        input_fingerprint (`str`, *optional*, defaults to `""`):
            `input_fingerprint(data_dir)`, set by `Meld` itself: being part of the config, it is part of the cache
            folder's name, so changed inputs get a cache of their own.
    """

    strict: bool = False
    input_fingerprint: str = ""


class Meld(LocalFolderBuilder):
    """MELD utterances with audio (from the videos), transcript, emotion and sentiment, in MELD's own splits."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = MeldConfig
    BUILDER_CONFIGS = [
        MeldConfig(name="emotion", version=VERSION, description="The seven emotions: " + ", ".join(EMOTIONS) + "."),
    ]
    DEFAULT_CONFIG_NAME = "emotion"

    def input_fingerprint(self, data_dir):
        return input_fingerprint(data_dir)

    def _info(self):
        return datasets.DatasetInfo(
            description=__doc__.split("\n")[0],
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "audio": datasets.Audio(sampling_rate=SAMPLING_RATE),
                    "text": datasets.Value("string"),
                    "label": datasets.ClassLabel(names=list(EMOTIONS)),
                    "speaker": datasets.Value("string"),
                    "dialogue_id": datasets.Value("int32"),
                    "utterance_id": datasets.Value("int32"),
                    "sentiment": datasets.Value("string"),
                }
            ),
            homepage="https://affective-meld.github.io",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        data_dir = _check_data_dir(self.config.data_dir)
        generators = []
        for split, meld_split, csv_name, _ in SPLITS:
            rows = read_csv(data_dir / csv_name, meld_split)
            videos = _match_videos(rows, video_folder(data_dir, meld_split), meld_split, self.config.strict)
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"rows": videos, "split": meld_split}))
        return generators

    def _generate_examples(self, rows, split):
        bad = []
        for row in rows:
            wav, problem = decode_video_audio(row["video"])
            if problem:
                if self.config.strict:
                    raise ValueError(f"the audio of {row['id']} ({row['video']}) is unusable: {problem}")
                bad.append(f"{row['id']} ({problem})")
                continue
            audio = {"bytes": wav, "path": None}  # an existing path would make datasets store the path instead
            yield row["id"], {key: row[key] for key in _FIELDS} | {"audio": audio}
        if bad:
            logger.warning(
                f"{split}: skipped {len(bad)} utterance(s) whose video has no usable audio track "
                f"(MELD issue 39 names train dia125_utt3): {_preview(bad)}"
            )

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        # Split sizes depend on the local copy (skips, a partial copy): there is nothing to verify.
        super()._download_and_prepare(dl_manager, datasets.VerificationMode.NO_CHECKS, **prepare_split_kwargs)


_FIELDS = ("id", "text", "label", "speaker", "dialogue_id", "utterance_id", "sentiment")


def load_meld(data_dir, cache_dir=None, rebuild=False, **config_kwargs):
    """Build (or reuse from the cache) MELD and return a `DatasetDict` with `train`, `validation` (MELD's dev) and
    `test`, after logging how each split's size compares with the published one.

    Args:
        data_dir (`str` or `Path`): the `MELD.Raw` folder.
        cache_dir (`str`, *optional*): the datasets cache (defaults to `HF_DATASETS_CACHE`).
        rebuild (`bool`, defaults to `False`): rebuild the cache even if it looks current.
        config_kwargs: `strict` (see `MeldConfig`).
    """
    builder = Meld(data_dir=data_dir, cache_dir=cache_dir, **config_kwargs)
    dataset = prepare(builder, rebuild)
    check_counts(dataset, builder.config.data_dir)
    return dataset


def check_counts(dataset, data_dir):
    """Log, per split, the utterances (and dialogues) kept against the CSV rows and the published sizes; a warning
    names the CSV rows that are not in the dataset. Returns `{meld split: {"published", "csv_rows", "kept", "absent",
    "dialogues", "published_dialogues"}}`."""
    report = {}
    for split, meld_split, csv_name, _ in SPLITS:
        csv_ids = [row["id"] for row in read_csv(Path(data_dir) / csv_name, meld_split, quiet=True)]
        columns = dataset[split].with_format(None).select_columns(["id", "dialogue_id"])
        kept, dialogues = set(columns["id"][:]), len(set(columns["dialogue_id"][:]))
        absent = [i for i in csv_ids if i not in kept]
        published = PUBLISHED_UTTERANCES[meld_split]
        report[meld_split] = {
            "published": published,
            "csv_rows": len(csv_ids),
            "kept": len(kept),
            "absent": absent,
            "dialogues": dialogues,
            "published_dialogues": PUBLISHED_DIALOGUES[meld_split],
        }
        message = (
            f"MELD {meld_split}: {len(kept)} utterances ({len(kept) - published:+d} against the published "
            f"{published}) in {dialogues} dialogues (published {PUBLISHED_DIALOGUES[meld_split]}), "
            f"{len(csv_ids)} rows in {csv_name}"
        )
        if absent or len(kept) != published:
            logger.warning(message + (f"; not in the dataset: {_preview(absent)}" if absent else ""))
        else:
            logger.info(message)
    return report


def video_folder(data_dir, meld_split):
    """The folder of a split's videos: the first of the known places that exists."""
    folders = next(folders for _, name, _, folders in SPLITS if name == meld_split)
    for folder in folders:
        if (Path(data_dir) / folder).is_dir():
            return Path(data_dir) / folder
    archive = Path(data_dir) / ARCHIVES[meld_split]
    hint = f" ({archive.name} is there: unpack it in {data_dir})" if archive.is_file() else ""
    raise FileNotFoundError(
        f"No {meld_split} video folder in {data_dir}: expected {Path(data_dir) / folders[0]}{hint}; data_dir must be "
        "the MELD.Raw folder with the three video archives unpacked in it"
    )


def read_csv(path, meld_split, quiet=False):
    """The rows of one MELD CSV as dicts with id, text, label (an `EMOTIONS` index), speaker, dialogue_id,
    utterance_id, sentiment and line. Text repairs and duplicate rows are counted in a warning (unless `quiet`)."""
    if not path.is_file():
        raise FileNotFoundError(f"MELD CSV not found: {path} (data_dir must be the MELD.Raw folder)")
    text, bad_lines = _decode_csv(path.read_bytes())
    if bad_lines and not quiet:
        logger.warning(
            f"{meld_split}: {path} is not UTF-8 on line(s) {_preview(map(str, sorted(bad_lines)))}: the "
            "bytes that are not were read as Windows-1252"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise ValueError(f"{path} has no column {', '.join(map(repr, missing))} (its columns: {columns})")
    rows, seen, repaired, duplicates = [], set(), [], []
    for values in reader:
        values = {key.strip(): (value or "") for key, value in values.items() if key is not None}
        line = reader.line_num
        row = _parse_row(values, path, line, meld_split)
        utterance, fixed = _repair_text(values["Utterance"])
        if fixed:
            repaired.append(row["id"])
        if row["id"] in seen:
            duplicates.append(f"{row['id']} (line {line})")
            continue
        seen.add(row["id"])
        rows.append({**row, "text": " ".join(utterance.split())})
    if duplicates:
        raise ValueError(f"{path}: the same dialogue and utterance more than once: {_preview(duplicates)}")
    if repaired and not quiet:
        logger.warning(
            f"{meld_split}: repaired the text of {len(repaired)} row(s) of {path.name} holding Windows-1252 "
            f"characters (read as such; MELD pull request 28): {_preview(repaired)}"
        )
    empty = [row["id"] for row in rows if not row["text"]]
    if empty and not quiet:
        logger.warning(
            f"{meld_split}: kept {len(empty)} utterance(s) with an empty transcript (text ''): {_preview(empty)}"
        )
    return rows


def _parse_row(values, path, line, meld_split):
    emotion, sentiment = values["Emotion"].strip().lower(), values["Sentiment"].strip().lower()
    if emotion not in EMOTIONS:
        raise ValueError(f"{path}:{line}: unknown emotion {values['Emotion']!r} (known: {', '.join(EMOTIONS)})")
    if sentiment not in SENTIMENTS:
        raise ValueError(f"{path}:{line}: unknown sentiment {values['Sentiment']!r} (known: {', '.join(SENTIMENTS)})")
    try:
        dialogue, utterance = int(values["Dialogue_ID"]), int(values["Utterance_ID"])
    except ValueError:
        raise ValueError(
            f"{path}:{line}: Dialogue_ID and Utterance_ID must be integers, got "
            f"{values['Dialogue_ID']!r} and {values['Utterance_ID']!r}"
        ) from None
    return {
        "id": f"{meld_split}/dia{dialogue}_utt{utterance}",
        "label": EMOTIONS.index(emotion),
        "speaker": _repair_text(values["Speaker"])[0].strip(),
        "dialogue_id": dialogue,
        "utterance_id": utterance,
        "sentiment": sentiment,
        "line": line,
    }


def _decode_csv(raw):
    """(text, line numbers holding bytes that are not UTF-8): UTF-8, with every invalid byte read as Latin-1, so that
    a Windows-1252 byte becomes the C1 character `_repair_text` maps (0x92 -> U+0092 -> "’")."""
    parts, bad_lines, start = [], set(), 0
    while True:
        try:
            parts.append(raw[start:].decode("utf-8-sig" if start == 0 else "utf-8"))
            break
        except UnicodeDecodeError as error:
            end = start + error.start
            parts.append(raw[start:end].decode("utf-8-sig" if start == 0 else "utf-8"))
            parts.append(raw[end : end + 1].decode("latin-1"))
            bad_lines.add(raw[:end].count(b"\n") + 1)
            start = end + 1
    return "".join(parts), bad_lines


def _cp1252(byte):
    try:
        return byte.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes Windows-1252 leaves undefined
        return byte.decode("latin-1")


def _repair_text(text):
    """(text, whether anything changed): C1 control characters read through Windows-1252, a no-break space made a
    space."""
    repaired = _C1.sub(lambda m: " " if m.group() == "\u00a0" else _cp1252(m.group().encode("latin-1")), text)
    return repaired, repaired != text


def _match_videos(rows, folder, meld_split, strict):
    """The CSV rows that have a video (with `video` set), after counting what else the folder holds."""
    hidden, extra_videos, other, videos = [], [], [], {}
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            match = _VIDEO.match(entry.name)
            if entry.name.startswith("."):
                hidden.append(entry.name)
            elif match and entry.is_file():
                videos[f"{meld_split}/dia{int(match['dialogue'])}_utt{int(match['utterance'])}"] = entry.path
            elif entry.name.startswith("final_videos_test"):
                extra_videos.append(entry.name)
            else:
                other.append(entry.name)
    if hidden:
        logger.warning(
            f"{meld_split}: ignored {len(hidden)} hidden file(s) in {folder} (macOS `._` copies, "
            f".DS_Store): {_preview(hidden)}"
        )
    if extra_videos:
        logger.warning(
            f"{meld_split}: ignored {len(extra_videos)} final_videos_test*.mp4 file(s) in {folder}, which "
            f"are not utterances (MELD issue 22): {_preview(extra_videos)}"
        )
    if other:
        logger.warning(f"{meld_split}: ignored {len(other)} other file(s) in {folder}: {_preview(other)}")
    ids = {row["id"] for row in rows}
    unlisted = sorted(Path(path).name for key, path in videos.items() if key not in ids)
    if unlisted:
        logger.warning(
            f"{meld_split}: ignored {len(unlisted)} video(s) in {folder} without a row in the CSV (MELD "
            f"issue 22): {_preview(unlisted)}"
        )
    no_video = [row["id"] for row in rows if row["id"] not in videos]
    if no_video and strict:
        raise FileNotFoundError(
            f"{len(no_video)} utterance(s) of the {meld_split} CSV have no video in {folder}: {_preview(no_video)}"
        )
    if no_video:
        logger.warning(
            f"{meld_split}: skipped {len(no_video)} utterance(s) of the CSV without a video in {folder} "
            f"(MELD issues 22 and 27 name dev dia110_utt7): {_preview(no_video)}"
        )
    return [{**row, "video": videos[row["id"]]} for row in rows if row["id"] in videos]


def decode_video_audio(path):
    """(16-bit WAV bytes of the 16 kHz mono audio track, None) or (None, the problem)."""
    from torchcodec.decoders import AudioDecoder

    try:
        samples = AudioDecoder(path, sample_rate=SAMPLING_RATE, num_channels=1).get_all_samples()
        data = samples.data.numpy()[0]  # (samples,)
    except Exception as error:  # noqa: BLE001 (FFmpeg's message, whatever the exception type, names the problem)
        return None, _decoder_problem(error)
    problem = check_samples(data, SAMPLING_RATE, min_samples=1)
    if problem:
        return None, f"the audio track {problem}"
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(data, -1.0, 1.0), SAMPLING_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), None


def _decoder_problem(error):
    """torchcodec's message, without the source location of its C++ code."""
    message = " ".join(str(error).split())
    if "best audio stream is unknown" in message:
        return "has no audio track"
    message = re.sub(r"^.*?\.cpp:\d+, ", "", message)
    return f"cannot be decoded ({message[:200]})"


def input_fingerprint(data_dir):
    """A hash of what the cached dataset is built from: the bytes of the three CSVs, and the name, size and
    modification time of every entry of the three video folders (those found)."""
    digest = hashlib.sha256()
    data_dir = Path(data_dir)
    for _, _meld_split, csv_name, folders in SPLITS:
        path = data_dir / csv_name
        if path.is_file():
            digest.update(f"{csv_name}\0".encode() + path.read_bytes())
        for folder in folders:
            if not (data_dir / folder).is_dir():
                continue
            with os.scandir(data_dir / folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    stat = entry.stat()
                    digest.update(f"{folder}/{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
            break
    return digest.hexdigest()[:16]


def _check_data_dir(data_dir):
    if data_dir is None:
        raise ValueError("Meld needs data_dir: the path of the MELD.Raw folder")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MELD data_dir does not exist or is not a folder: {data_dir}")
    if not (data_dir / SPLITS[0][2]).is_file() and (data_dir / "MELD.Raw").is_dir():
        raise FileNotFoundError(f"No {SPLITS[0][2]} in {data_dir} (did you mean its MELD.Raw subfolder?)")
    return data_dir


def _preview(items, limit=5):
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


__all__ = ["EMOTIONS", "PUBLISHED_UTTERANCES", "SENTIMENTS", "Meld", "MeldConfig", "check_counts", "load_meld"]
