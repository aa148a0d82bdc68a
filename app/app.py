"""FDRL web demo: record or upload an utterance, see which emotion FDRL hears in its speech and its transcript.

    python app/app.py --model demo_output/model                       # `make app` does this
    python app/app.py --model my-fdrl --asr_model pretrained/whisper-base --port 7860

The model comes from `--model`, else the `MODEL` environment variable, else `demo_output/model` (what `make demo`
writes); the speech recogniser for an empty transcript box from `--asr_model`, else `ASR_MODEL`, else
`pretrained/whisper-base` when that folder exists (`--asr_model none` runs without one: the transcript must then be
typed). The app reads the model with the flat `pipeline_fdrl`, `modeling_fdrl` and `processing_fdrl` modules: from
the repository when it runs from a clone, from the model folder (which carries them) when this folder is uploaded
as a Hugging Face Space on its own. It makes no Hub call: HF_HUB_OFFLINE=1 unless the environment says otherwise.

The "Whole recording" tab takes a long file (minutes): the speech recogniser cuts it into sentences, FDRL labels each
one, and the page shows emotion over time and a table of the sentences (`EmotionDemo.timeline(audio)`, the same
`fdrl.inference.timeline` as `fdrl-timeline`). On the CPU the recogniser is faster-whisper on
`pretrained/whisper-base-ct2` when `make pretrained` wrote it (transformers' pipeline otherwise, and for Hub ids).

`EmotionDemo.predict(audio, transcript)` is everything the single-clip tab does, as a plain function: it returns a
`Prediction`, or for bad input (no audio, an empty, too short or silent recording, a file that is not audio, a
transcript without words) a message for the user. The page shows either; nothing a user uploads stops the server.
"""

import os


# Before gradio, huggingface_hub and transformers are imported: they read these once. No Hub call at start-up
# or per request, no analytics. A Space that must download its model sets HF_HUB_OFFLINE=0 in its variables.
for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


logger = logging.getLogger("fdrl.app")

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
DEFAULT_MODEL = "demo_output/model"
DEFAULT_ASR_MODEL = "pretrained/whisper-base"
MIN_DURATION = 0.5  # seconds; IEMOCAP's shortest utterances last about 0.6 s
SILENCE_PEAK = 1e-4  # a peak below this (full scale 1.0) is a muted microphone, not speech
MAX_UPLOAD = "100mb"  # a 10-minute 16-bit 48 kHz stereo WAV is 115 MB; 16 kHz mono is 19 MB
EMOTION_NAMES = {
    "ang": "anger",
    "hap": "happiness",
    "neu": "neutral",
    "sad": "sadness",
    "exc": "excitement",
    "fru": "frustration",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
}
# (pair shown on the page, the two vectors' names in the pipeline's "representations")
SIMILARITY_PAIRS = (
    ("shared speech · shared text", "shared_audio", "shared_text"),
    ("shared speech · private speech", "shared_audio", "private_audio"),
    ("shared text · private text", "shared_text", "private_text"),
)
SIMILARITY_EXPLANATION = (
    "Cosine similarity of FDRL's four vectors for this utterance (1: same direction, 0: unrelated). The alignment "
    "losses are meant to pull the shared speech and shared text vectors together, but on the demo's frozen features "
    "they leave them less alike than training without them does (the README's alignment study), and the "
    "orthogonality loss pushes each private vector towards orthogonality with its modality's shared one over a "
    "batch: read the first row as how far the two modalities agree on this utterance, not as proof of alignment."
)


def display_name(label):
    """'ang' -> 'anger'; labels that are not IEMOCAP's codes are shown as the model names them."""
    return EMOTION_NAMES.get(label, label)


@dataclass
class Prediction:
    """What the page shows for one utterance."""

    scores: dict[str, float]  # every emotion (the model's labels) -> probability, best first
    transcript: str  # the text the model read
    transcript_source: str  # "typed" or "recognised by <model>"
    similarities: dict[str, float]  # SIMILARITY_PAIRS' names -> cosine similarity
    notes: list[str] = field(default_factory=list)  # what else the page must say (the recording was cut, ...)

    @property
    def top_label(self):
        return next(iter(self.scores))


class InputError(ValueError):
    """Bad input from the user; its message is shown on the page as it is."""


class EmotionDemo:
    r"""
    The app's prediction function, without the page: `predict(audio, transcript)`.

    Args:
        classifier ([`MultimodalEmotionRecognitionPipeline`]):
            The FDRL pipeline, with its `asr_model` when the transcript may be left empty.
        min_duration (`float`, *optional*, defaults to 0.5):
            Shorter recordings are refused: they carry too little speech to judge.
    """

    def __init__(self, classifier, min_duration=MIN_DURATION):
        self.classifier = classifier
        self.min_duration = min_duration
        self.max_duration = classifier.processor.max_duration  # the processor cuts longer audio (None: never)
        asr = classifier.asr_pipeline
        self.asr_name = (
            None if asr is None else (getattr(asr, "name", None) or Path(str(asr.model.name_or_path).rstrip("/")).name)
        )

    def timeline(self, audio):
        """
        The whole recording's emotion, sentence by sentence: `fdrl.inference.timeline.recording_timeline`'s dict,
        or a `str`: a message naming what is wrong with the input (the single-clip messages). Needs the recogniser
        to give timed sentences (`fdrl.inference.recognizer`).
        """
        from fdrl.inference.timeline import recording_timeline

        recognizer = self.classifier.asr_pipeline
        if recognizer is None or not hasattr(recognizer, "segments"):
            return (
                "The whole-recording mode needs a speech recogniser that times sentences: start the app from a "
                "clone of the repository, with pretrained/whisper-base (`make pretrained`) or --asr_model."
            )
        try:
            waveform, rate, _ = self._read(audio, cut=False)
            return recording_timeline(
                waveform,
                self.classifier,
                recognizer,
                sampling_rate=rate,
                progress=False,
                name=Path(audio).name if isinstance(audio, (str, os.PathLike)) else None,
            )
        except InputError as error:
            return str(error)
        except ValueError as error:
            return f"The model cannot read this input: {str(error).removeprefix('input: ')}."

    def predict(self, audio, transcript=None):
        """
        Args:
            audio (`str`, `tuple` or `None`): a file path (WAV, FLAC, MP3, OGG, ...) or gradio's numpy audio,
                `(sampling_rate, samples)` with samples `(samples,)` or `(samples, channels)`.
            transcript (`str`, *optional*): what is said; empty to have it recognised by the ASR model.

        Returns:
            [`Prediction`], or a `str`: a message naming what is wrong with the input.
        """
        text = None
        try:
            waveform, rate, notes = self._read(audio)
            text = self._check_transcript(transcript)
            output = self.classifier(
                {"audio": waveform, "sampling_rate": rate, "text": text},
                return_representations=True,
                return_transcript=True,
            )
            if output["transcript_source"] == "asr":
                self._check_words(
                    output["transcript"],
                    f"The speech recogniser ({self.asr_name}) heard no words "
                    f"(it returned {output['transcript']!r}): type the transcript in the box.",
                )
        except InputError as error:
            return str(error)
        except ValueError as error:  # the pipeline's own checks (and its speech recogniser's) name the problem
            typed = transcript is not None and transcript.strip()
            hint = "" if typed else " Type the transcript in the box and run again."
            return f"The model cannot read this input: {str(error).removeprefix('input: ')}.{hint}"
        return Prediction(
            scores={entry["label"]: entry["score"] for entry in output["scores"]},
            transcript=output["transcript"],
            transcript_source="typed" if output["transcript_source"] == "input" else f"recognised by {self.asr_name}",
            similarities=cosine_similarities(output["representations"]),
            notes=notes,
        )

    def _read(self, audio, cut=True):
        """(channels, samples) float32 array and its rate, cut to max_duration (unless `cut=False`), and the notes
        the page must show."""
        if audio is None or (isinstance(audio, str) and not audio):
            raise InputError("No audio: record with the microphone or upload a file (WAV, FLAC, MP3, OGG).")
        array, rate, recording = _decode(audio)
        seconds = array.shape[-1] / rate
        if array.size == 0:
            raise InputError(f"{recording} is empty: record or upload some speech.")
        if seconds < self.min_duration:
            raise InputError(f"{recording} is too short ({seconds:.2f} s): speak for at least {self.min_duration:g} s.")
        if not np.isfinite(array).all():
            raise InputError(f"{recording} is damaged: it contains NaN or infinite samples.")
        if np.abs(array).max() < SILENCE_PEAK:
            raise InputError(f"{recording} is silent: check the microphone and record again.")
        notes = []
        if cut and self.max_duration is not None and seconds > self.max_duration:
            # cut here, as the processor would, so that the speech recogniser hears what the model hears
            array = array[:, : round(self.max_duration * rate)]
            notes.append(
                f"The recording lasts {seconds:.1f} s: FDRL hears only its first {self.max_duration:g} s "
                "(the processor's max_duration), and so does the speech recogniser."
            )
        return array, rate, notes

    def _check_transcript(self, transcript):
        """The typed transcript, or None to have the speech recognised."""
        if transcript is None or not transcript.strip():
            if self.asr_name is None:
                raise InputError(
                    "No transcript: type what is said. This app runs without a speech recogniser "
                    "(start it with --asr_model to have the speech transcribed)."
                )
            return None
        self._check_words(
            transcript,
            f"The transcript {transcript.strip()!r} has no word the model can read "
            "(emoji and symbols are not words): type the words spoken, or clear the box to have "
            "them recognised.",
        )
        return transcript.strip()

    def _check_words(self, text, message):
        """A transcript the tokenizer reads as nothing but [UNK] tells the model nothing (the pipeline's rule)."""
        from processing_fdrl import transcript_problem

        if transcript_problem(self.classifier.processor.tokenizer, text):
            raise InputError(message)


def _decode(audio):
    """(channels, samples) float32 array, its rate, and how messages name it, from a path or gradio's tuple."""
    from pipeline_fdrl import read_audio

    if isinstance(audio, (str, os.PathLike)):
        name = Path(audio).name
        try:
            array, rate = read_audio(audio)
        except ValueError as error:
            logger.info(f"cannot decode {audio}: {error}")
            raise InputError(
                f"Cannot read {name} as audio: it is not a WAV, FLAC, MP3 or OGG recording, or it is damaged."
            ) from None
        return np.asarray(array, dtype=np.float32), rate, f"The recording {name}"
    if isinstance(audio, (tuple, list)) and len(audio) == 2:
        from processing_fdrl import scale_integer_samples

        rate, samples = audio
        samples = np.asarray(samples)
        if samples.size == 0:  # the microphone stopped before it recorded anything
            raise InputError("The recording is empty: record or upload some speech.")
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise InputError(f"The recording has no usable sampling rate ({rate!r}): record it again or upload a file.")
        # gradio's recordings are int16: scaled by their full range, as soundfile reads the same file
        samples = scale_integer_samples(samples).astype(np.float32)
        samples = samples.reshape(samples.shape[0], -1).T  # (channels, samples)
        return samples, int(rate), "The recording"
    raise InputError(f"Unsupported audio input ({type(audio).__name__}): record or upload a file.")


def cosine_similarities(representations):
    """The page's pairs of FDRL vectors (S_a, S_t, P_a, P_t) -> their cosine similarity."""
    vectors = {name: torch.tensor(values) for name, values in representations.items()}
    return {
        pair: float(torch.nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0))
        for pair, a, b in SIMILARITY_PAIRS
    }


# ----- loading -------------------------------------------------------------------------------------------------------
def find_model_folder(model):
    """A local folder as it is; a Hub id from the local cache (or downloaded, when HF_HUB_OFFLINE=0)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as error:  # not a folder, and neither cached nor downloadable (offline, unknown id)
        raise SystemExit(
            f"--model {model}: not a model folder, and not found on the Hub ({error}). Pass the folder "
            f"`make demo` writes ({DEFAULT_MODEL}), or set HF_HUB_OFFLINE=0 to download a Hub model."
        ) from error


def add_fdrl_modules_to_path(model_folder):
    """The flat FDRL modules: the repository's when the app runs from a clone, else the model folder's copies."""
    for folder in (APP_DIR.parent, Path(model_folder).resolve()):
        if (folder / "pipeline_fdrl.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return folder
    raise SystemExit(f"pipeline_fdrl.py is neither in {APP_DIR.parent} nor in the model folder {model_folder}")


def load_recognizer(asr_model, device="cpu"):
    """The speech recogniser: `fdrl.inference.recognizer`'s (faster-whisper on the CPU when a CTranslate2 folder is at
    hand) from a clone; the model name as it is (transformers' pipeline) in a Space without the `fdrl` package."""
    if asr_model is None:
        return None
    try:
        from fdrl.inference.recognizer import load_recognizer as load
    except ImportError:
        return asr_model
    return load(asr_model, device=device)


def load_classifier(model_folder, asr_model=None, device="cpu"):
    """The FDRL pipeline on a model folder (the flat modules must be importable: see add_fdrl_modules_to_path).
    `asr_model`: a folder or Hub id (transformers' pipeline), or a recogniser from `load_recognizer`."""
    from modeling_fdrl import FDRLModel
    from pipeline_fdrl import MultimodalEmotionRecognitionPipeline, check_model_folder
    from processing_fdrl import FDRLProcessor

    check_model_folder(model_folder)  # not an FDRL model, a damaged weights file: a ValueError naming it
    model = FDRLModel.from_pretrained(model_folder).eval()
    processor = FDRLProcessor.from_pretrained(model_folder)
    return MultimodalEmotionRecognitionPipeline(model=model, processor=processor, device=device, asr_model=asr_model)


def example_rows():
    """[[clip, transcript], ...] from app/examples/<name>.wav + <name>.txt."""
    return [
        [str(wav), wav.with_suffix(".txt").read_text(encoding="utf-8").strip()]
        for wav in sorted(EXAMPLES_DIR.glob("*.wav"))
        if wav.with_suffix(".txt").is_file()
    ]


# ----- the page ------------------------------------------------------------------------------------------------------
def build_page(predictor, model_name):
    """The Gradio Blocks page around `predictor.predict` (an `EmotionDemo`)."""
    labels = ", ".join(display_name(label) for label in predictor.classifier.model.config.id2label.values())
    recogniser = (
        f"an empty transcript box is filled by the speech recogniser **{predictor.asr_name}**"
        if predictor.asr_name
        else "no speech recogniser is loaded, so type the transcript"
    )
    cut = (
        f"the first {predictor.max_duration:g} s of longer recordings"
        if predictor.max_duration
        else "the whole recording"
    )
    with gr.Blocks(title="FDRL: emotion from speech and text") as page:
        gr.Markdown(
            "# FDRL: emotion from speech and its transcript\n"
            "Fine-grained Disentangled Representation Learning (ICASSP 2024) reads the speech and the words of an "
            f"utterance together. Model `{model_name}` ({labels}); {recogniser}; it hears {cut}."
        )
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Speech", elem_id="audio")
                transcript = gr.Textbox(
                    label="Transcript",
                    lines=2,
                    elem_id="transcript",
                    placeholder=(
                        "Leave empty to have it recognised, or type what is said"
                        if predictor.asr_name
                        else "Type what is said"
                    ),
                )
                submit = gr.Button("Recognise the emotion", variant="primary", elem_id="submit")
                if example_rows():
                    gr.Examples(
                        example_rows(),
                        inputs=[audio, transcript],
                        cache_examples=False,
                        label="Examples (espeak-ng speech in the demo corpus's style)",
                    )
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                scores = gr.Label(label="Emotion", elem_id="scores")
                source = gr.Markdown(elem_id="source")
                similarities = gr.Dataframe(
                    headers=["FDRL vectors", "cosine similarity"],
                    datatype=["str", "number"],
                    label="What each modality contributes",
                    interactive=False,
                    elem_id="similarities",
                )
                gr.Markdown(SIMILARITY_EXPLANATION)

        def on_submit(audio_value, transcript_value):
            start = time.perf_counter()
            try:
                result = predictor.predict(audio_value, transcript_value)
            except Exception:  # a bug, not the user's input: log it, keep serving
                logger.exception("prediction failed")
                result = "Something went wrong on the server while predicting; the details are in its log."
            if isinstance(result, str):
                gr.Warning(result)
                return None, gr.skip(), "", None, f"**Could not predict.** {result}"
            rows = [[pair, round(value, 3)] for pair, value in result.similarities.items()]
            message = " ".join([f"Predicted in {time.perf_counter() - start:.1f} s.", *result.notes])
            heard = f"**Transcript** {result.transcript_source}: “{result.transcript}”" + (
                " (correct it in the box and run again)" if result.transcript_source != "typed" else ""
            )
            return (
                {display_name(label): score for label, score in result.scores.items()},
                result.transcript,
                heard,
                rows,
                message,
            )

        submit.click(
            on_submit,
            inputs=[audio, transcript],
            outputs=[scores, transcript, source, similarities, status],
            api_name="predict",
        )
        transcript.submit(
            on_submit,
            inputs=[audio, transcript],
            outputs=[scores, transcript, source, similarities, status],
            api_name=False,
        )
        add_timeline_section(predictor)
    return page


def timeline_table(timeline):
    """The page's segment table: start and end (m:ss.s), emotion (or why there is none), its probability, words."""
    clock = lambda seconds: f"{int(seconds // 60)}:{seconds % 60:04.1f}"  # noqa: E731
    return [
        [
            clock(s["start"]),
            clock(s["end"]),
            display_name(s["label"]) if "label" in s else f"none: {s['reason']}",
            round(s["scores"][s["label"]], 3) if "label" in s else None,
            s["transcript"],
        ]
        for s in timeline["segments"]
    ]


def add_timeline_section(predictor):
    """The "whole recording" section: upload a long file, see emotion over time and the sentence table."""
    try:
        from fdrl.inference.timeline import plot_timeline
    except ImportError:  # a Space without the fdrl package: the single-clip part only
        return

    gr.Markdown(
        "## Whole recording\nUpload a long recording (minutes): the speech recogniser cuts it into "
        "sentences and FDRL labels each one from its speech and its words."
    )
    with gr.Row():
        with gr.Column(scale=1):
            long_audio = gr.Audio(sources=["upload"], type="filepath", label="Recording", elem_id="long_audio")
            run = gr.Button("Emotion over the recording", variant="primary", elem_id="timeline_submit")
        with gr.Column(scale=3):
            long_status = gr.Markdown(elem_id="timeline_status")
            plot = gr.Plot(label="Emotion over time", elem_id="timeline_plot")
            table = gr.Dataframe(
                headers=["start", "end", "emotion", "probability", "transcript"],
                datatype=["str", "str", "str", "number", "str"],
                label="Sentences",
                interactive=False,
                wrap=True,
                elem_id="timeline_table",
            )

    def on_run(audio_value):
        start = time.perf_counter()
        try:
            result = predictor.timeline(audio_value)
        except Exception:  # a bug, not the user's input: log it, keep serving
            logger.exception("timeline failed")
            result = "Something went wrong on the server while predicting; the details are in its log."
        if isinstance(result, str):
            gr.Warning(result)
            return None, None, f"**Could not predict.** {result}"
        labelled = sum("label" in s for s in result["segments"])
        message = (
            f"{len(result['segments'])} sentence(s), {labelled} labelled, over {result['duration']:.1f} s; "
            f"done in {time.perf_counter() - start:.1f} s."
        )
        return plot_timeline(result), timeline_table(result), message

    run.click(on_run, inputs=[long_audio], outputs=[plot, table, long_status], api_name="timeline")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=os.environ.get("MODEL", DEFAULT_MODEL),
        help="FDRL model folder or Hub id (default: $MODEL, else demo_output/model).",
    )
    parser.add_argument(
        "--asr_model",
        default=os.environ.get("ASR_MODEL"),
        help="Speech recogniser (folder or Hub id) for an empty transcript box; 'none' for none "
        "(default: $ASR_MODEL, else pretrained/whisper-base when that folder exists).",
    )
    parser.add_argument(
        "--host", default=None, help="Address to serve on (default: gradio's, 127.0.0.1 or $GRADIO_SERVER_NAME)."
    )
    parser.add_argument("--port", type=int, default=None, help="Port (default: gradio's, 7860 or $GRADIO_SERVER_PORT).")
    parser.add_argument("--device", default="cpu", help="torch device of the models, e.g. cpu or cuda.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    return parser.parse_args(argv)


def resolve_asr_model(asr_model):
    if asr_model is None:
        return DEFAULT_ASR_MODEL if Path(DEFAULT_ASR_MODEL).is_dir() else None
    return None if asr_model.lower() == "none" else asr_model


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)

    # Model: the folder, the flat modules that read it, the pipeline (with its speech recogniser)
    model_folder = find_model_folder(args.model)
    modules = add_fdrl_modules_to_path(model_folder)
    asr_model = resolve_asr_model(args.asr_model)
    logger.info(f"model {model_folder}, FDRL modules from {modules}, speech recogniser {asr_model or 'none'}")
    try:
        recognizer = load_recognizer(asr_model, device=args.device)
        predictor = EmotionDemo(load_classifier(model_folder, asr_model=recognizer, device=args.device))
    except ValueError as error:
        raise SystemExit(f"--model {args.model}: {error}") from None

    # Page: system fonts, so that the browser fetches no web font either
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    build_page(predictor, args.model).queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=MAX_UPLOAD,
        allowed_paths=[str(EXAMPLES_DIR)],
        ssr_mode=False,
        theme=theme,
        footer_links=[],
    )


if __name__ == "__main__":
    main()
