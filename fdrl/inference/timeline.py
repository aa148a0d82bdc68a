"""The emotion timeline of a whole recording, shared by `fdrl-timeline`, the web demo and the evidence script.

    from fdrl.inference.timeline import load_timeline, recording_timeline, plot_timeline, write_csv

    classifier, recogniser = load_timeline("demo_output/model")   # FDRL pipeline + faster-whisper on the CPU
    timeline = recording_timeline("meeting.wav", classifier, recogniser)
    timeline["segments"][0]   # {"start": 0.0, "end": 2.4, "transcript": "...", "label": "ang", "scores": {...}}
    plot_timeline(timeline, "timeline.png"); write_csv(timeline, "timeline.csv")

The speech recogniser cuts the recording into timed sentences and gives their words; FDRL classifies each sentence
from its speech and its words (`MultimodalEmotionRecognitionPipeline.timeline`, the one implementation). A sentence
that is too short, has no words or cannot be classified keeps its place with a `reason` instead of a `label`.
"""

import csv
import json
import logging
import math
import time
from pathlib import Path

import numpy as np


logger = logging.getLogger(__name__)

MIN_DURATION = 0.5  # seconds: shorter sentences get a reason, not a label (IEMOCAP's shortest last about 0.6 s)
SILENCE_PEAK = 1e-4  # a peak below this (full scale 1.0) is silence, not speech: as the web demo says
FORMAT = 1


def load_timeline(model, asr_model=None, backend="auto", device="cpu", language=None):
    """(FDRL pipeline, speech recogniser): the model folder (or Hub id) with this repository's classes, and
    `fdrl.inference.recognizer.load_recognizer(asr_model, backend, device, language)`."""
    from fdrl.inference.recognizer import load_recognizer
    from modeling_fdrl import FDRLModel
    from pipeline_fdrl import MultimodalEmotionRecognitionPipeline
    from processing_fdrl import FDRLProcessor

    fdrl_model = FDRLModel.from_pretrained(model).eval()
    processor = FDRLProcessor.from_pretrained(model, trust_remote_code=False)
    classifier = MultimodalEmotionRecognitionPipeline(model=fdrl_model, processor=processor, device=device)
    return classifier, load_recognizer(asr_model, backend=backend, device=device, language=language)


def check_recording(audio, sampling_rate=None):
    """(mono float32 samples, rate) of `audio` (a path, bytes or an array with `sampling_rate`), or a `ValueError`
    naming what is wrong: the pipeline's messages for unreadable, empty and NaN audio, and "silent" for a
    recording without sound."""
    from pipeline_fdrl import _input_name, _load_waveform

    try:
        waveform, rate = _load_waveform(audio, sampling_rate)
    except ValueError as error:
        raise ValueError(f"{_input_name(None, audio)}: {error}") from None
    if float(waveform.abs().max()) < SILENCE_PEAK:
        peak = float(waveform.abs().max())
        raise ValueError(f"{_input_name(None, audio)}: the recording is silent (peak {peak:.1e})")
    return waveform, rate


def recording_timeline(
    audio, classifier, recognizer, sampling_rate=None, batch_size=8, min_duration=MIN_DURATION, progress=None, name=None
):
    """
    The timeline of one recording (see the module docstring).

    Returns:
        `dict`: `format`, `audio` (`name`, else the path if one was given), `duration` (s), `classes`, `asr_model`,
        `asr_backend`, `seconds` (wall time), `real_time_factor` (`seconds / duration`) and `segments`, in time
        order: each `{"start", "end", "transcript", "label", "scores"}` or, when it could not be classified,
        `{"start", "end", "transcript", "reason"}`.
    """
    start = time.perf_counter()
    waveform, rate = check_recording(audio, sampling_rate)
    result = classifier.timeline(
        waveform,
        recognizer=recognizer,
        sampling_rate=rate,
        batch_size=batch_size,
        min_duration=min_duration,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    config = classifier.model.config
    labelled = sum("label" in segment for segment in result["segments"])
    logger.info(
        f"{len(result['segments'])} segment(s), {labelled} labelled, over {result['duration']:.1f} s in {seconds:.1f} s"
    )
    return {
        "format": FORMAT,
        "audio": name or (str(audio) if isinstance(audio, (str, Path)) else None),
        "duration": result["duration"],
        "classes": [config.id2label[i] for i in range(config.num_labels)],
        **recognizer.describe(),
        "seconds": round(seconds, 3),
        "real_time_factor": round(seconds / result["duration"], 4) if result["duration"] else None,
        "segments": result["segments"],
    }


def write_json(timeline, path):
    Path(path).write_text(json.dumps(timeline, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def segment_rows(timeline):
    """One flat row per segment: start, end, label (empty with a reason), reason, score_<class>..., transcript."""
    rows = []
    for segment in timeline["segments"]:
        scores = segment.get("scores", {})
        rows.append(
            {
                "start": segment["start"],
                "end": segment["end"],
                "label": segment.get("label", ""),
                "reason": segment.get("reason", ""),
                **{f"score_{c}": round(scores[c], 4) if c in scores else "" for c in timeline["classes"]},
                "transcript": segment["transcript"],
            }
        )
    return rows


def write_csv(timeline, path):
    rows = segment_rows(timeline)
    columns = ["start", "end", "label", "reason", *(f"score_{c}" for c in timeline["classes"]), "transcript"]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _clock(seconds, _=None):
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}" if seconds >= 60 else f"{seconds:.0f} s"


def plot_timeline(timeline, path=None, title=None):
    """
    Emotion over time: a coloured band per segment (hatched grey with no label) above the class probabilities as
    lines (one level per segment). The figure widens with the recording (16 inches up to 10 minutes, then wider),
    so a 10-minute recording of 4-second sentences stays readable. Returns the matplotlib figure; saved when `path`
    is given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    classes, duration = timeline["classes"], max(timeline["duration"], 1e-3)
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(classes)}
    width = min(48.0, max(12.0, 16.0 * math.sqrt(duration / 600.0)))
    figure, (band, lines) = plt.subplots(
        2, 1, figsize=(width, 5.0), sharex=True, gridspec_kw={"height_ratios": [1, 3]}, constrained_layout=True
    )
    for segment in timeline["segments"]:
        span = (segment["start"], segment["end"])
        if "label" in segment:
            band.axvspan(*span, color=colours[segment["label"]], linewidth=0)
        else:
            band.axvspan(*span, facecolor="0.85", hatch="//", edgecolor="0.5", linewidth=0)
    band.set_yticks([])
    band.set_ylabel("emotion")
    handles = [Patch(color=colours[name], label=name) for name in classes]
    handles.append(Patch(facecolor="0.85", hatch="//", edgecolor="0.5", label="no label"))
    band.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)

    for name in classes:  # each segment's probability as a flat step, gaps (silence) left open
        xs, ys = [], []
        for segment in timeline["segments"]:
            if "scores" in segment:
                xs += [segment["start"], segment["end"], np.nan]
                ys += [segment["scores"][name]] * 2 + [np.nan]
        lines.plot(xs, ys, color=colours[name], linewidth=1.4, label=name)
    lines.set_ylim(0, 1)
    lines.set_ylabel("probability")
    lines.set_xlim(0, duration)
    lines.set_xlabel("time")
    lines.xaxis.set_major_locator(MaxNLocator(nbins=max(6, int(width)), steps=[1, 2, 3, 5, 6, 10]))
    lines.xaxis.set_major_formatter(FuncFormatter(_clock))
    lines.grid(axis="y", alpha=0.3)
    lines.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    labelled = sum("label" in s for s in timeline["segments"])
    band.set_title(
        title
        or f"{Path(timeline.get('audio') or 'recording').name}: {len(timeline['segments'])} "
        f"segments ({labelled} labelled) over {_clock(duration)}",
        fontsize=10,
    )
    if path is not None:
        figure.savefig(path, dpi=100)
        plt.close(figure)
    return figure


__all__ = [
    "check_recording",
    "load_timeline",
    "plot_timeline",
    "recording_timeline",
    "segment_rows",
    "write_csv",
    "write_json",
]
