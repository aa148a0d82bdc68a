"""A tiny fake MELD.Raw, in the exact layout of the real one and with its known quirks, for tests.

`make_meld_fixture(root)` writes `root/MELD.Raw` and returns what a correct loader must find there. The videos are
real MP4 files made with FFmpeg (a 16x16 black H.264 picture and a stereo 44.1 kHz AAC sine tone, as the release has
a picture and a stereo track), so the loader decodes an audio track out of a video, as it must on the release.

    MELD.Raw/train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv   the real columns
    MELD.Raw/train/train_splits/dia{D}_utt{U}.mp4
    MELD.Raw/dev_splits_complete/dia{D}_utt{U}.mp4
    MELD.Raw/output_repeated_splits_test/dia{D}_utt{U}.mp4

The quirks (each a counted skip or repair for the loader):
- train `dia125_utt3.mp4` is corrupted (the first 200 bytes of a video), as in MELD issue 39;
- test `dia1_utt2.mp4` is a video without an audio track;
- dev `dia110_utt7` has a CSV row and no video (MELD issues 22 and 27);
- dev `dia66_utt9.mp4` and test `dia108_utt2.mp4` are videos without a CSV row (issue 22);
- test `final_videos_testdia101_utt0.mp4` (issue 22), and `._dia0_utt0.mp4` (AppleDouble junk) and `.DS_Store` in
  the test folder;
- train_sent_emo.csv holds a raw Windows-1252 byte 0x92 (not UTF-8); dev_sent_emo.csv is UTF-8 but holds the C1
  character U+0092 (the mojibake MELD pull request 28 cleaned in the repository's copies);
- test `dia2_utt2` has an empty Utterance; a transcript with a comma and quotes is quoted as the CSV module does.
"""

import shutil
import subprocess
from pathlib import Path


EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENT_OF = {
    "neutral": "neutral",
    "joy": "positive",
    "surprise": "positive",
    "anger": "negative",
    "sadness": "negative",
    "disgust": "negative",
    "fear": "negative",
}
COLUMNS = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)
SPEAKERS = ("Chandler", "Joey", "Monica", "Rachel")
SENTENCES = (
    "Oh my God!",
    "I don't know, maybe.",
    'He said "fine", and left.',
    "Could this BE any more awkward?",
    "We were on a break!",
    "How you doin'?",
    "Pivot. Pivot!",
)
FOLDERS = {"train": "train/train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
CSV_NAMES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
# (dialogue, utterances) per split, in CSV order
DIALOGUES = {
    "train": ((0, 3), (1, 3), (2, 3), (125, 4)),
    "dev": ((0, 3), (1, 3), (110, 3)),
    "test": ((0, 3), (1, 3), (2, 3)),
}
DEV_MISSING_VIDEO = "dev/dia110_utt7"  # dialogue 110 is written with utterances 6, 7, 8
CORRUPTED = "train/dia125_utt3"
NO_AUDIO_TRACK = "test/dia1_utt2"
EMPTY_TEXT = "test/dia2_utt2"
CP1252_BYTE_ROW = "train/dia1_utt1"  # "don\x92t" as the raw byte 0x92
C1_CHARACTER_ROW = "dev/dia0_utt1"  # "don\u0092t" in UTF-8
SAMPLING_RATE_IN_VIDEO = 44100


def have_ffmpeg():
    return shutil.which("ffmpeg") is not None


def _ffmpeg(output, duration, frequency, audio=True):
    command = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s=16x16:d={duration}:r=10",
    ]
    if audio:
        tone = f"sine=frequency={frequency}:duration={duration}:sample_rate={SAMPLING_RATE_IN_VIDEO}"
        command += ["-f", "lavfi", "-i", tone, "-ac", "2", "-c:a", "aac", "-b:a", "48k", "-shortest"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(output)]
    subprocess.run(command, check=True)


def _timestamp(seconds):
    milliseconds = round(seconds * 1000)
    return (
        f"{milliseconds // 3600000:02d}:{milliseconds // 60000 % 60:02d}:{milliseconds // 1000 % 60:02d},"
        f"{milliseconds % 1000:03d}"
    )


def _csv_field(value):
    value = str(value)
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value


def make_meld_fixture(root):
    """Write `root/MELD.Raw`; return `{"data_dir", "utterances": {id: {...}}, "kept": {split: [ids]}, "skipped":
    {reason: [ids]}, "csv_rows": {split: n}}`, `utterances` holding every CSV row with the fields a loader returns
    (text, emotion, speaker, sentiment, dialogue_id, utterance_id) and the tone (duration, frequency) of its video."""
    data_dir = Path(root) / "MELD.Raw"
    utterances, kept, csv_rows = {}, {}, {}
    index = 0
    for split, dialogues in DIALOGUES.items():
        folder = data_dir / FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        lines, kept[split] = [",".join(COLUMNS)], []
        for dialogue, count in dialogues:
            numbers = range(6, 6 + count) if dialogue == 110 else range(count)
            for utterance in numbers:
                uid = f"{split}/dia{dialogue}_utt{utterance}"
                emotion = EMOTIONS[index % len(EMOTIONS)]
                text = SENTENCES[index % len(SENTENCES)]
                if uid == EMPTY_TEXT:
                    text = ""
                duration, frequency = round(0.4 + 0.05 * (index % 8), 2), 200 + 25 * index
                utterances[uid] = {
                    "text": text,
                    "emotion": emotion,
                    "speaker": SPEAKERS[index % len(SPEAKERS)],
                    "sentiment": SENTIMENT_OF[emotion],
                    "dialogue_id": dialogue,
                    "utterance_id": utterance,
                    "duration": duration,
                    "frequency": frequency,
                }
                written = text
                if uid == CP1252_BYTE_ROW:
                    written, utterances[uid]["text"] = "I don\x92t know.", "I don’t know."
                if uid == C1_CHARACTER_ROW:
                    written, utterances[uid]["text"] = "I don\u0092t know.", "I don’t know."
                start = 10.0 + 4 * index
                lines.append(
                    ",".join(
                        _csv_field(v)
                        for v in (
                            index + 1,
                            written,
                            utterances[uid]["speaker"],
                            emotion,
                            SENTIMENT_OF[emotion],
                            dialogue,
                            utterance,
                            3,
                            7,
                            _timestamp(start),
                            _timestamp(start + duration),
                        )
                    )
                )
                index += 1
                video = folder / f"dia{dialogue}_utt{utterance}.mp4"
                if uid == DEV_MISSING_VIDEO:
                    continue
                _ffmpeg(video, duration, frequency, audio=uid != NO_AUDIO_TRACK)
                if uid == CORRUPTED:
                    video.write_bytes(video.read_bytes()[:200])
                if uid not in (CORRUPTED, NO_AUDIO_TRACK):
                    kept[split].append(uid)
        csv_rows[split] = len(lines) - 1
        content = "\r\n".join(lines) + "\r\n"
        raw = content.encode("utf-8").replace("\x92".encode(), b"\x92") if split == "train" else content.encode("utf-8")
        (data_dir / CSV_NAMES[split]).write_bytes(raw)
    # files in the video folders that are not utterances of the CSVs
    _ffmpeg(data_dir / FOLDERS["dev"] / "dia66_utt9.mp4", 0.4, 1000)
    _ffmpeg(data_dir / FOLDERS["test"] / "dia108_utt2.mp4", 0.4, 1000)
    _ffmpeg(data_dir / FOLDERS["test"] / "final_videos_testdia101_utt0.mp4", 0.4, 1000)
    (data_dir / FOLDERS["test"] / "._dia0_utt0.mp4").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (data_dir / FOLDERS["test"] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    skipped = {"no_video": [DEV_MISSING_VIDEO], "no_audio": [CORRUPTED, NO_AUDIO_TRACK]}
    return {"data_dir": data_dir, "utterances": utterances, "kept": kept, "skipped": skipped, "csv_rows": csv_rows}
