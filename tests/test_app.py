"""The web demo (app/app.py): its prediction function against the pipeline, every bad input a message, and the page
itself in a real browser (Debian's headless chromium through selenium) against the app served in a subprocess."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor
from transformers import pipeline as load_pipeline

from conftest import REPO, tiny_fdrl_config
from modeling_fdrl import FDRLModel
from pipeline_fdrl import MultimodalEmotionRecognitionPipeline, save_pipeline
from processing_fdrl import FDRLProcessor
from test_pipeline_fdrl import ID2LABEL, TEXTS, save_tiny_asr, tiny_asr, write_audio


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TOLERANCE = 1e-6


def load_app_module():
    """app/app.py by its path: the Space layout has no package around it."""
    spec = importlib.util.spec_from_file_location("fdrl_app", REPO / "app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = load_app_module()


# ----- fixtures ------------------------------------------------------------------------------------------------------
def blank_asr_pipeline(folder):
    """A speech recogniser that always returns an empty transcript (CTC pushed to blank)."""
    model, vocab = tiny_asr(blank_bias=5.0)
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>")
    feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    return load_pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        device="cpu",
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random FDRL saved with save_pipeline, a tiny ASR model, the app's predictors and a reference pipeline."""
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    examples = app.example_rows()
    processor = FDRLProcessor.from_texts(TEXTS + [text for _, text in examples], vocab_size=99)
    config = tiny_fdrl_config(initializer_range=0.25, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
    folder = save_pipeline(FDRLModel(config).eval(), processor, root / "model")
    asr = save_tiny_asr(root / "asr")
    reference = MultimodalEmotionRecognitionPipeline(
        model=FDRLModel.from_pretrained(folder).eval(),
        processor=FDRLProcessor.from_pretrained(folder),
        device="cpu",
        asr_model=asr,
    )
    with_asr = app.EmotionDemo(app.load_classifier(folder, asr_model=asr))
    without_asr = app.EmotionDemo(app.load_classifier(folder))
    blank_asr = app.EmotionDemo(app.load_classifier(folder, asr_model=blank_asr_pipeline(root / "blank_asr")))
    return SimpleNamespace(
        root=root,
        folder=folder,
        asr=asr,
        reference=reference,
        examples=examples,
        with_asr=with_asr,
        without_asr=without_asr,
        blank_asr=blank_asr,
    )


def reference_scores(saved, audio, text=None):
    """The pipeline's {label: score} for a file (and transcript), best first."""
    item = {"audio": audio} if text is None else {"audio": audio, "text": text}
    output = saved.reference(item, return_transcript=True, return_representations=True)
    return {entry["label"]: entry["score"] for entry in output["scores"]}, output


def assert_same_scores(prediction, expected):
    assert list(prediction.scores) == list(expected)  # every emotion, in the same order
    for label, score in expected.items():
        assert abs(prediction.scores[label] - score) <= TOLERANCE, label


# ----- the prediction function ---------------------------------------------------------------------------------------
def test_scores_match_the_pipeline(saved):
    path, text = saved.examples[0]
    prediction = saved.with_asr.predict(path, text)
    expected, output = reference_scores(saved, path, text)
    assert isinstance(prediction, app.Prediction)
    assert_same_scores(prediction, expected)
    assert set(prediction.scores) == set(ID2LABEL.values())
    assert prediction.transcript == text and prediction.transcript_source == "typed" and prediction.notes == []
    vectors = {name: torch.tensor(values) for name, values in output["representations"].items()}
    cosine = torch.nn.functional.cosine_similarity(vectors["shared_audio"], vectors["shared_text"], dim=0)
    assert abs(prediction.similarities["shared speech · shared text"] - float(cosine)) <= TOLERANCE
    assert set(prediction.similarities) == {pair for pair, _, _ in app.SIMILARITY_PAIRS}
    assert all(-1.0 - TOLERANCE <= value <= 1.0 + TOLERANCE for value in prediction.similarities.values())


def test_empty_box_is_transcribed_by_the_asr_model(saved):
    path, _ = saved.examples[1]
    prediction = saved.with_asr.predict(path, "   ")
    expected, output = reference_scores(saved, path)
    assert output["transcript_source"] == "asr"
    assert prediction.transcript == output["transcript"] and prediction.transcript
    assert prediction.transcript_source == "recognised by asr"
    assert_same_scores(prediction, expected)


def test_gradio_numpy_audio_matches_the_file(saved, tmp_path):
    """The microphone's (rate, int16 samples) gives what the same samples in a 16-bit WAV give."""
    samples = (0.3 * 32767 * np.sin(np.linspace(0, 900, 14000))).astype(np.int16)
    stereo = np.stack([samples, samples // 2], axis=1)  # (samples, channels), as gradio gives it
    sf.write(tmp_path / "clip.wav", stereo, 22050, subtype="PCM_16")
    prediction = saved.with_asr.predict((22050, stereo), TEXTS[0])
    assert_same_scores(prediction, reference_scores(saved, str(tmp_path / "clip.wav"), TEXTS[0])[0])


@pytest.mark.parametrize("extension", ["flac", "ogg", "mp3"])
def test_other_formats(saved, tmp_path, extension):
    path = tmp_path / f"clip.{extension}"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(12000).astype(np.float32), 16000)
    prediction = saved.with_asr.predict(str(path), TEXTS[1])
    assert_same_scores(prediction, reference_scores(saved, str(path), TEXTS[1])[0])


def test_ten_minute_file_is_cut_and_says_so(saved, tmp_path):
    path = write_audio(tmp_path / "long.wav", 600, 16000, seed=3)
    prediction = saved.with_asr.predict(path, TEXTS[2])
    assert isinstance(prediction, app.Prediction)
    assert len(prediction.notes) == 1 and "600.0 s" in prediction.notes[0] and "first 16 s" in prediction.notes[0]
    # the processor cuts the file the same way when the pipeline reads it whole
    assert_same_scores(prediction, reference_scores(saved, path, TEXTS[2])[0])


def write_bytes(path, data):
    path.write_bytes(data)
    return str(path)


BAD_INPUTS = {
    "no audio": (lambda tmp: None, TEXTS[0], "with_asr", "No audio"),
    "empty recording": (lambda tmp: write_audio(tmp / "empty.wav", 0, 16000), TEXTS[0], "with_asr", "is empty"),
    "0.1 s recording": (
        lambda tmp: write_audio(tmp / "short.wav", 0.1, 16000),
        TEXTS[0],
        "with_asr",
        "too short (0.10 s)",
    ),
    "silent recording": (lambda tmp: (16000, np.zeros(16000, dtype=np.int16)), TEXTS[0], "with_asr", "silent"),
    "NaN samples": (lambda tmp: (16000, np.full(16000, np.nan, dtype=np.float32)), TEXTS[0], "with_asr", "NaN"),
    "not audio, renamed .wav": (
        lambda tmp: write_bytes(tmp / "notes.wav", b"these are my notes\n" * 200),
        TEXTS[0],
        "with_asr",
        "Cannot read notes.wav as audio",
    ),
    "emoji-only transcript": (
        lambda tmp: write_audio(tmp / "a.wav", 1.0, 16000),
        "😀🎉😡",
        "with_asr",
        "no word the model can read",
    ),
    "no transcript, no ASR model": (
        lambda tmp: write_audio(tmp / "a.wav", 1.0, 16000),
        "",
        "without_asr",
        "No transcript",
    ),
    "ASR hears nothing": (lambda tmp: write_audio(tmp / "a.wav", 1.0, 16000), None, "blank_asr", "empty transcript"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_a_message(saved, tmp_path, case):
    make_audio, transcript, predictor, expected = BAD_INPUTS[case]
    message = getattr(saved, predictor).predict(make_audio(tmp_path), transcript)
    assert isinstance(message, str), message
    assert expected in message


def test_an_empty_or_rateless_microphone_recording_gives_a_message(saved):
    """Issue 18, cause 16: an empty recording showed numpy's reshape error and asked for the transcript the user had
    typed; a sampling rate of 0 raised ZeroDivisionError to the page's catch-all."""
    empty = "The recording is empty: record or upload some speech."  # no "type the transcript": it was typed
    cases = [
        ((16000, np.zeros(0, dtype=np.int16)), empty),
        ((16000, np.zeros((0, 2), dtype=np.int16)), empty),
        (
            (0, np.ones(16000, dtype=np.int16)),
            "The recording has no usable sampling rate (0): record it again or upload a file.",
        ),
    ]
    for audio, message in cases:
        assert saved.with_asr.predict(audio, TEXTS[0]) == message


def test_a_folder_that_is_not_an_fdrl_model_or_is_damaged_is_refused(saved, tmp_path):
    """Issue 18, causes 8 and 9 in the app: the same model-folder check as fdrl-predict, before anything loads."""
    import shutil

    with pytest.raises(ValueError, match=rf"^{saved.asr} is not an FDRL model folder \(model_type wav2vec2\)$"):
        app.load_classifier(saved.asr)
    damaged = tmp_path / "damaged"
    shutil.copytree(saved.folder, damaged)
    (damaged / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=rf"the weights file {damaged / 'model.safetensors'} is damaged"):
        app.load_classifier(damaged)


def test_model_folder_and_modules_are_found(saved, tmp_path, monkeypatch):
    assert app.find_model_folder(str(saved.folder)) == saved.folder
    assert app.add_fdrl_modules_to_path(saved.folder) == REPO  # a clone: the repository's modules
    monkeypatch.setattr(app, "APP_DIR", tmp_path / "space")  # a Space: the model folder's copies
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert app.add_fdrl_modules_to_path(saved.folder) == saved.folder.resolve()
    with pytest.raises(SystemExit, match="not a model folder"):
        app.find_model_folder(str(tmp_path / "missing"))  # HF_HUB_OFFLINE=1: no Hub call


def test_bench_app_runs(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import bench_app

    output = tmp_path / "app.json"
    bench_app.main(["--tiny", "--repeats", "2", "--output", str(output)])
    results = json.loads(output.read_text())["results"]
    for mode in ("typed_transcript", "with_asr"):
        assert results[mode]["latency_s"]["n"] == 2 and results[mode]["latency_s"]["median"] > 0


def test_space_folder_pins_the_lock():
    """app/ is uploaded as a Space as it is: its requirements are the lock's versions, its README the Space card."""
    lock = (REPO / "requirements.lock").read_text()
    pins = [
        line.strip()
        for line in (REPO / "app" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {pin.split("==")[0] for pin in pins} >= {"gradio", "torch", "torchaudio", "transformers", "soundfile"}
    for pin in pins:
        assert f"\n{pin} " in lock, f"{pin} is not the version in requirements.lock"
    card = (REPO / "app" / "README.md").read_text()
    gradio = next(pin for pin in pins if pin.startswith("gradio=="))
    assert card.startswith("---\n") and "sdk: gradio\n" in card and "app_file: app.py\n" in card
    assert f"sdk_version: {gradio.split('==')[1]}\n" in card


# ----- the page in a browser -----------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(process, url, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}: {process.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer at {url} within {timeout} s")


@pytest.fixture
def server(saved, tmp_path):
    """`python app/app.py` on the tiny model, on a free port of 127.0.0.1; killed at the end."""
    port = free_port()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        GRADIO_TEMP_DIR=str(tmp_path / "gradio"),
        MPLCONFIGDIR=str(tmp_path),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "app" / "app.py"),
            "--model",
            str(saved.folder),
            "--asr_model",
            saved.asr,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield SimpleNamespace(process=process, url=f"http://127.0.0.1:{port}/")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def upload(driver, path):
    from selenium.webdriver.common.by import By

    clear = driver.find_elements(By.CSS_SELECTOR, "#audio button[aria-label='Clear']")
    if clear and clear[0].is_displayed():
        clear[0].click()
    driver.find_element(By.CSS_SELECTOR, "#audio button[aria-label='Upload file']").click()
    driver.find_element(By.CSS_SELECTOR, "#audio input[type=file]").send_keys(str(path))


def submit_and_read(driver, wait, css, predicate):
    """Click the button, then wait until the element's text satisfies `predicate`; returns that text."""
    from selenium.webdriver.common.by import By

    wait.until(lambda d: d.find_element(By.ID, "submit").is_enabled())
    driver.find_element(By.ID, "submit").click()

    def text_when_ready(d):
        elements = d.find_elements(By.CSS_SELECTOR, css)
        return elements[0].text if elements and predicate(elements[0].text) else False

    return wait.until(text_when_ready)


@pytest.mark.skipif(
    not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver): "
    "`make system-deps` installs them",
)
def test_page_in_a_browser(saved, server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    top = "#scores [data-testid='label-output-value']"
    wait_for_server(server.process, server.url, timeout=90)
    browser.get(server.url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio button[aria-label='Upload file']"))

    # A WAV and a typed transcript: the page's top emotion is the pipeline's
    path, text = saved.examples[0]
    upload(browser, path)
    browser.find_element(By.CSS_SELECTOR, "#transcript textarea").send_keys(text)
    expected = app.display_name(next(iter(reference_scores(saved, path, text)[0])))
    assert submit_and_read(browser, wait, top, bool) == expected
    wait.until(lambda d: "typed" in d.find_element(By.ID, "source").text)
    assert "shared speech · shared text" in browser.find_element(By.ID, "similarities").text
    browser.save_screenshot(str(tmp_path / "app.png"))
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert loaded and [url for url in loaded if not url.startswith(server.url)] == []  # no web font, no CDN

    # A file that is not audio: a message on the page, and the server carries on
    broken = Path(write_bytes(tmp_path / "broken.wav", np.random.default_rng(9).bytes(4000)))
    upload(browser, broken)
    status = submit_and_read(browser, wait, "#status", lambda value: "Cannot read" in value)
    assert "broken.wav" in status and "not a WAV" in status
    assert not browser.find_elements(By.CSS_SELECTOR, top)  # the old prediction is gone

    # One click on an example fills both inputs; the next prediction works
    path, text = saved.examples[-1]
    browser.find_element(By.XPATH, f"//td[contains(., '{Path(path).name}')]").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#transcript textarea").get_attribute("value") == text)
    expected = app.display_name(next(iter(reference_scores(saved, path, text)[0])))
    assert submit_and_read(browser, wait, top, bool) == expected
    assert server.process.poll() is None


def test_the_page_shows_the_models_own_classes(saved, tmp_path):
    """Issue 22: a model with six classes (not IEMOCAP's four) shows its six, in its order, on the page and in the
    scores; IEMOCAP's codes get their names, other labels are shown as the model names them."""
    import gradio as gr

    six = ["neu", "ang", "sad", "hap", "fru", "calm"]
    torch.manual_seed(0)
    config = tiny_fdrl_config(id2label=dict(enumerate(six)), label2id={label: i for i, label in enumerate(six)})
    processor = FDRLProcessor.from_pretrained(saved.folder)
    folder = save_pipeline(FDRLModel(config).eval(), processor, tmp_path / "six")
    demo = app.EmotionDemo(app.load_classifier(folder))
    path, text = saved.examples[0]
    prediction = demo.predict(path, text)
    assert sorted(prediction.scores) == sorted(six) and abs(sum(prediction.scores.values()) - 1) <= 1e-5
    page = app.build_page(demo, "six-class model")
    header = next(block.value for block in page.blocks.values() if isinstance(block, gr.Markdown))
    assert "(neutral, anger, sadness, happiness, frustration, calm)" in header
