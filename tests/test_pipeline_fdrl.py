"""Inference for users: the "multimodal-emotion-recognition" pipeline, save_pipeline's folder and the batch CLI.

The remote-code path runs in a fresh subprocess (HF_HUB_OFFLINE=1, an empty HF_MODULES_CACHE, cwd outside the
repository), because a class registered in this process would win silently.
"""

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import (
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)
from transformers import pipeline as load_pipeline

from conftest import REPO, tiny_audio_config, tiny_fdrl_config
from modeling_fdrl import FDRLModel
from pipeline_fdrl import REMOTE_CODE_FILES, MultimodalEmotionRecognitionPipeline, save_pipeline
from processing_fdrl import FDRLProcessor


TEXTS = ["I can't believe you did that", "that is wonderful news", "leave me alone", "okay fine whatever"]
ID2LABEL = {0: "ang", 1: "hap", 2: "neu", 3: "sad"}
TOLERANCE = 1e-5

REMOTE_SCRIPT = r"""
import json, sys
import numpy as np, torch
from transformers import pipeline

spec = json.load(open(sys.argv[1]))
task = "multimodal-emotion-recognition"
pipe = pipeline(task, model=spec["model"], trust_remote_code=True, device="cpu")
batch_sizes = []
pipe.model.register_forward_pre_hook(
    lambda module, args, kwargs: batch_sizes.append(kwargs["input_values"].shape[0]), with_kwargs=True)

def inputs():
    items = [{"audio": path, "text": text} for path, text in spec["files"]]
    items.append({"audio": open(spec["files"][0][0], "rb").read(), "text": spec["texts"][1]})
    items.append({"audio": np.load(spec["array"]), "text": spec["texts"][2], "sampling_rate": 16000})
    items.append({"audio": torch.from_numpy(np.load(spec["tensor"])), "text": spec["texts"][3]})  # call's rate
    return items

result = {"modules": [type(pipe).__module__, type(pipe.model).__module__, type(pipe.processor).__module__]}
result["unbatched"] = pipe(inputs(), sampling_rate=12000)
result["unbatched_sizes"], batch_sizes[:] = list(batch_sizes), []
result["batched"] = pipe(inputs(), sampling_rate=12000, batch_size=3)
result["batched_sizes"] = list(batch_sizes)
result["single_top_k"] = pipe(inputs()[0], top_k=2)
result["representations"] = pipe(inputs()[:2], return_representations=True, batch_size=2)
result["no_text_error"] = pipe([inputs()[0], {"audio": spec["files"][0][0]}])[1]

with_asr = pipeline(task, model=spec["model"], trust_remote_code=True, device="cpu", asr_model=spec["asr"])
result["asr"] = with_asr([{"audio": spec["files"][0][0]}, inputs()[1]], batch_size=2)
json.dump(result, open(spec["out"], "w"))
"""


# ----- fixtures ------------------------------------------------------------------------------------------------------
def write_audio(path, seconds, rate, channels=1, seed=0):
    samples = 0.1 * np.random.default_rng(seed).standard_normal((int(seconds * rate), channels))
    sf.write(path, samples.astype(np.float32), rate)
    return str(path)


def tiny_asr(blank_bias):
    """A tiny random Wav2Vec2ForCTC with a letter vocabulary; `blank_bias` pushes CTC towards (or away from) blank."""
    torch.manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(letters)}}
    model = Wav2Vec2ForCTC(tiny_audio_config(vocab_size=len(vocab), pad_token_id=0)).eval()
    with torch.no_grad():
        model.lm_head.bias[0] = blank_bias
    return model, vocab


def save_tiny_asr(folder):
    model, vocab = tiny_asr(blank_bias=-5.0)  # never blank: a non-empty (meaningless) transcript
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>")
    feature_extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(folder)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny FDRL saved twice into the same folder with save_pipeline, a tiny ASR model, and a few recordings."""
    root = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    processor = FDRLProcessor.from_texts(TEXTS, vocab_size=99)
    config = tiny_fdrl_config(initializer_range=0.25, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
    model = FDRLModel(config).eval()
    save_pipeline(model, processor, root / "model")
    save_pipeline(model, processor, root / "model")  # idempotent: the training script saves every model folder so

    audio = root / "audio"
    audio.mkdir()
    files = [
        (write_audio(audio / "a16.wav", 0.5, 16000, seed=1), TEXTS[0]),
        (write_audio(audio / "b8.wav", 0.4, 8000, seed=2), TEXTS[1]),  # resampled
        (write_audio(audio / "c_stereo.wav", 0.3, 22050, channels=2, seed=3), TEXTS[2]),  # mixed to mono
    ]
    np.save(audio / "array.npy", 0.1 * np.random.default_rng(4).standard_normal(5600))  # float64, 16 kHz
    np.save(audio / "tensor.npy", 0.1 * np.random.default_rng(5).standard_normal((2, 4000)).astype(np.float32))
    return SimpleNamespace(
        root=root,
        folder=root / "model",
        model=model,
        processor=processor,
        files=files,
        array=str(audio / "array.npy"),
        tensor=str(audio / "tensor.npy"),
        asr=save_tiny_asr(root / "asr"),
    )


CLI_GOOD = {"calm": (0.5, 16000), "loud": (0.4, 8000), "short": (0.3, 16000)}


@pytest.fixture(scope="module")
def cli_run(saved):
    """Starts `python -m fdrl.cli.predict` on a folder of three good recordings, a corrupt WAV and one without a
    transcript.

    It starts with the `remote` subprocess (which requests it), so the two interpreters load in parallel.
    """
    clips = saved.root / "clips"
    clips.mkdir()
    for seed, (name, (seconds, rate)) in enumerate(CLI_GOOD.items()):
        write_audio(clips / f"{name}.wav", seconds, rate, seed=seed)
        (clips / f"{name}.txt").write_text(TEXTS[seed] + "\n")
    (clips / "corrupt.wav").write_bytes(np.random.default_rng(9).bytes(4000))
    (clips / "corrupt.txt").write_text(TEXTS[0])
    write_audio(clips / "untranscribed.wav", 0.3, 16000, seed=7)  # no .txt
    output = saved.root / "out" / "predictions.csv"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fdrl.cli.predict",
            "--model",
            str(saved.folder),
            "--input",
            str(clips),
            "--output",
            str(output),
            "--batch_size",
            "2",
            "--device",
            "cpu",
        ],
        cwd=saved.root,
        env=dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    yield clips, output, process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def remote(saved, cli_run):
    """Runs REMOTE_SCRIPT in a fresh interpreter and returns what it recorded."""
    script = saved.root / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    spec = dict(
        model=str(saved.folder),
        files=saved.files,
        texts=TEXTS,
        array=saved.array,
        tensor=saved.tensor,
        asr=saved.asr,
        out=str(saved.root / "remote.json"),
    )
    (saved.root / "spec.json").write_text(json.dumps(spec))
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(saved.root / "modules"), TOKENIZERS_PARALLELISM="false"
    )
    run = subprocess.run(
        [sys.executable, str(script), str(saved.root / "spec.json")],
        cwd=saved.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(Path(spec["out"]).read_text())


@pytest.fixture(scope="module")
def local_pipe(saved):
    return MultimodalEmotionRecognitionPipeline(model=saved.model, processor=saved.processor, device="cpu")


def direct_scores(saved, audio, text, sampling_rate, **tokenizer_kwargs):
    """softmax(logits) from the model and processor called by hand, in class-id order."""
    batch = saved.processor(audio=audio, text=text, sampling_rate=sampling_rate, **tokenizer_kwargs)
    with torch.no_grad():
        return saved.model(**batch).logits.softmax(-1)[0].tolist()


def read(path):
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data.T, rate


def by_class(scores):
    """A pipeline's sorted [{"label", "score"}] as scores in class-id order."""
    lookup = {entry["label"]: entry["score"] for entry in scores}
    return [lookup[ID2LABEL[i]] for i in range(len(ID2LABEL))]


def expected_inputs(saved):
    """(audio, text, rate) of REMOTE_SCRIPT's inputs(), decoded as a user would."""
    items = [(*read(path), text) for path, text in saved.files]
    items = [(audio, text, rate) for audio, rate, text in items]
    items.append((items[0][0], TEXTS[1], items[0][2]))  # the bytes of a16.wav
    items.append((np.load(saved.array), TEXTS[2], 16000))
    items.append((np.load(saved.tensor), TEXTS[3], 12000))
    return items


# ----- (a) the saved folder, loaded as remote code -------------------------------------------------------------------
def test_save_pipeline_writes_a_complete_hub_folder(saved):
    names = {p.name for p in saved.folder.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", *REMOTE_CODE_FILES} <= names
    config = json.loads((saved.folder / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_fdrl.FDRLConfig", "AutoModel": "modeling_fdrl.FDRLModel"}
    assert config["custom_pipelines"]["multimodal-emotion-recognition"]["impl"] == (
        "pipeline_fdrl.MultimodalEmotionRecognitionPipeline"
    )
    assert "AutoProcessor" in json.loads((saved.folder / "processor_config.json").read_text())["auto_map"]
    assert not saved.model.training  # save_pipeline leaves the mode alone


def test_remote_pipeline_classes_come_from_the_saved_folder(remote):
    assert all(module.startswith("transformers_modules.") for module in remote["modules"]), remote["modules"]


def test_remote_pipeline_matches_model_and_processor(saved, remote):
    expected = [direct_scores(saved, audio, text, rate) for audio, text, rate in expected_inputs(saved)]
    for output, want in zip(remote["unbatched"], expected, strict=True):
        np.testing.assert_allclose(by_class(output), want, atol=TOLERANCE)
        assert [e["score"] for e in output] == sorted((e["score"] for e in output), reverse=True)
    assert len({round(o[0]["score"], 6) for o in remote["unbatched"]}) > 1  # inputs really differ


def test_remote_batched_equals_unbatched(remote):
    assert remote["unbatched_sizes"] == [1] * 6 and remote["batched_sizes"] == [3, 3]
    for batched, unbatched in zip(remote["batched"], remote["unbatched"], strict=True):
        np.testing.assert_allclose(by_class(batched), by_class(unbatched), atol=TOLERANCE)


def test_remote_top_k_and_representations(saved, remote):
    top = remote["single_top_k"]
    assert len(top) == 2 and top == remote["unbatched"][0][:2]
    for output, scores in zip(remote["representations"], remote["unbatched"][:2]):
        assert set(output) == {"scores", "representations"}
        np.testing.assert_allclose(by_class(output["scores"]), by_class(scores), atol=TOLERANCE)
        vectors = output["representations"]
        assert set(vectors) == {"shared_audio", "shared_text", "private_audio", "private_text"}
        assert all(len(vector) == saved.model.config.hidden_size for vector in vectors.values())
    audio, rate = read(saved.files[0][0])
    batch = saved.processor(audio=audio, text=TEXTS[0], sampling_rate=rate)
    with torch.no_grad():
        shared_text = saved.model(**batch).shared_text[0].tolist()
    np.testing.assert_allclose(
        remote["representations"][0]["representations"]["shared_text"], shared_text, atol=TOLERANCE
    )


# ----- (b) speech-only inputs ----------------------------------------------------------------------------------------
def test_remote_asr_transcript_reaches_the_text_encoder(saved, remote):
    speech_only, with_text = remote["asr"]
    assert speech_only["transcript_source"] == "asr" and speech_only["transcript"].strip()
    assert with_text["transcript_source"] == "input" and with_text["transcript"] == TEXTS[1]
    audio, rate = read(saved.files[0][0])
    limit = dict(truncation=True, max_length=saved.model.config.text_config.max_position_embeddings)
    want = direct_scores(saved, audio, speech_only["transcript"], rate, **limit)
    np.testing.assert_allclose(by_class(speech_only["scores"]), want, atol=TOLERANCE)
    other = direct_scores(saved, audio, TEXTS[3], rate)
    assert np.abs(np.array(want) - np.array(other)).max() > 1e-4  # the text matters: the check above means something
    np.testing.assert_allclose(by_class(with_text["scores"]), by_class(remote["unbatched"][1]), atol=TOLERANCE)


def test_remote_missing_text_without_asr_names_the_item(saved, remote):
    assert remote["no_text_error"]["input"] == f"input 1 ({saved.files[0][0]})"
    assert remote["no_text_error"]["error"].startswith("no transcript: pass a non-empty 'text'")


def test_empty_asr_transcript_is_an_error_naming_the_item(saved):
    model, vocab = tiny_asr(blank_bias=100.0)  # always blank: an empty transcript
    folder = saved.root / "asr_blank_vocab"
    folder.mkdir(exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    asr = load_pipeline(
        "automatic-speech-recognition",
        model=model,
        device="cpu",
        tokenizer=Wav2Vec2CTCTokenizer(str(folder / "vocab.json")),
        feature_extractor=Wav2Vec2FeatureExtractor(return_attention_mask=True),
    )
    pipe = MultimodalEmotionRecognitionPipeline(
        model=saved.model, processor=saved.processor, device="cpu", asr_model=asr
    )
    path = saved.files[1][0]
    outputs = pipe([{"audio": saved.files[0][0], "text": TEXTS[0]}, {"audio": path}])
    assert outputs[1] == {
        "input": f"input 1 ({path})",
        "error": "the speech-recognition model returned an empty transcript; pass 'text' for this input",
    }
    with pytest.raises(ValueError, match=rf"^input \({path}\): .*empty transcript"):
        pipe({"audio": path})


# ----- (d) bad inputs: each fails naming the item --------------------------------------------------------------------
@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda d: {"audio": str(d / "missing.wav"), "text": "hi"}, "no such file"),
        (lambda d: {"audio": str(d / "corrupt.wav"), "text": "hi"}, "cannot decode the audio"),
        (lambda d: {"audio": str(d / "empty.wav"), "text": "hi"}, "empty"),
        (lambda d: {"audio": str(d), "text": "hi"}, "not a file"),
        (lambda d: {"audio": b"not audio at all", "text": "hi"}, "cannot decode the audio"),
        (lambda d: {"audio": np.zeros(0), "text": "hi", "sampling_rate": 16000}, "empty"),
        (lambda d: {"audio": np.full(4000, np.nan), "text": "hi", "sampling_rate": 16000}, "NaN"),
        (lambda d: {"audio": np.zeros(4000), "text": "hi"}, "sampling_rate is required"),
        (lambda d: {"audio": np.zeros(4000), "text": "hi", "sampling_rate": -1}, "sampling_rate"),
        (lambda d: {"audio": np.zeros(50), "text": "hi", "sampling_rate": 16000}, "too short"),
        (lambda d: {"audio": 42, "text": "hi"}, "must be a file path, bytes"),
        (lambda d: {"audio": np.zeros(4000), "text": 7, "sampling_rate": 16000}, "'text' must be a str"),
        (lambda d: {"audio": np.zeros(4000), "text": "   ", "sampling_rate": 16000}, "no transcript"),
        (lambda d: {"audio": np.zeros(4000), "transcript": "hi", "sampling_rate": 16000}, "unknown keys"),
        (lambda d: {"text": "hi"}, "no 'audio'"),
    ],
)
def test_bad_input_fails_naming_the_item(saved, local_pipe, tmp_path, make_input, message):
    """In a list, the bad input's place holds its error; alone, it raises. Both name it."""
    (tmp_path / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.float32), 16000)
    bad = make_input(tmp_path)
    audio = bad.get("audio")
    path = f" ({audio})" if isinstance(audio, str) else ""
    good = {"audio": saved.files[0][0], "text": TEXTS[0]}
    outputs = local_pipe([good, good, bad], batch_size=2)
    assert set(outputs[2]) == {"input", "error"} and outputs[2]["input"] == f"input 2{path}"
    assert re.search(message, outputs[2]["error"]), outputs[2]["error"]
    assert outputs[0] == outputs[1] and "error" not in outputs[0][0]
    with pytest.raises(ValueError, match=message) as error:
        local_pipe(bad)
    assert str(error.value).startswith(f"input{path}: {outputs[2]['error']}"), str(error.value)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_a_bad_input_does_not_lose_the_good_ones_after_it(saved, local_pipe, batch_size):
    """Issue 12, item 8: a bad item raised after the first result was yielded, and the good ones after it were lost."""
    first, last = ({"audio": path, "text": text} for path, text in saved.files[:2])
    bad = {"audio": "/no/such.wav", "text": "hi"}
    outputs = local_pipe([first, bad, last], batch_size=batch_size)
    assert len(outputs) == 3
    assert outputs[1] == {"input": "input 1 (/no/such.wav)", "error": "no such file"}
    alone = [local_pipe(first), local_pipe(last)]
    for output, want in zip([outputs[0], outputs[2]], alone):
        np.testing.assert_allclose(by_class(output), by_class(want), atol=TOLERANCE)
    only_bad = local_pipe([bad, bad], batch_size=batch_size)  # a batch without one good input never reaches the model
    assert only_bad == [{"input": f"input {i} (/no/such.wav)", "error": "no such file"} for i in (0, 1)]
    streamed = list(local_pipe(iter([first, bad, last]), batch_size=batch_size, return_transcript=True))
    assert [set(output) for output in streamed] == [
        {"scores", "transcript", "transcript_source"},
        {"input", "error"},
        {"scores", "transcript", "transcript_source"},
    ]


def test_single_input_errors_and_generators(saved, local_pipe):
    with pytest.raises(ValueError, match=r"^input \(/no/such\.wav\): no such file"):
        local_pipe({"audio": "/no/such.wav", "text": "hi"})
    inputs = [{"audio": path, "text": text} for path, text in saved.files]
    streamed = list(local_pipe(iter(inputs), batch_size=2))
    np.testing.assert_allclose(
        [by_class(o) for o in streamed], [by_class(o) for o in local_pipe(inputs)], atol=TOLERANCE
    )
    with pytest.raises(ValueError, match="top_k"):
        local_pipe(inputs[0], top_k=0)


# ----- (c) the batch CLI ---------------------------------------------------------------------------------------------
def test_cli_predicts_every_good_file_and_reports_the_bad_ones(saved, cli_run):
    clips, output, process = cli_run
    stdout, stderr = process.communicate(timeout=300)
    run = SimpleNamespace(returncode=process.returncode, stdout=stdout, stderr=stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["id"] for row in rows] == sorted(CLI_GOOD)
    for row in rows:
        scores = [float(row[f"score_{ID2LABEL[i]}"]) for i in range(len(ID2LABEL))]
        assert row["label"] == ID2LABEL[int(np.argmax(scores))] and float(row["score"]) == max(scores)
        audio, rate = read(row["audio"])
        text = (clips / f"{row['id']}.txt").read_text().strip()
        np.testing.assert_allclose(scores, direct_scores(saved, audio, text, rate), atol=TOLERANCE)
    report = json.loads(Path(f"{output}.errors.json").read_text())
    assert report["predicted"] == 3 and report["failed"] == 2
    assert {error["id"] for error in report["errors"]} == {"corrupt", "untranscribed"}
    for name in ("corrupt.wav", "untranscribed.wav"):
        assert name in run.stdout
    assert "to instantiate a model of type" not in run.stdout + run.stderr  # issue 12, item 8


def test_cli_manifest_to_jsonl_and_exit_codes(saved, tmp_path):
    from fdrl.cli import predict as predict_fdrl

    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {"id": "one", "audio": saved.files[0][0], "text": TEXTS[0]},
        {"id": "two", "audio": "missing.wav", "text": TEXTS[1]},
        {"audio": saved.files[1][0], "text": TEXTS[1]},
    ]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "predictions.jsonl"
    assert (
        predict_fdrl.main(
            ["--model", str(saved.folder), "--input", str(manifest), "--output", str(output), "--device", "cpu"]
        )
        == 0
    )
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["one", saved.files[1][0]]
    assert json.loads(Path(f"{output}.errors.json").read_text())["errors"][0]["id"] == "two"

    manifest.write_text(json.dumps(rows[1]) + "\n")
    assert (
        predict_fdrl.main(
            [
                "--model",
                str(saved.folder),
                "--input",
                str(manifest),
                "--output",
                str(output),
                "--device",
                "cpu",
                "--overwrite",
                "true",
            ]
        )
        == 1
    )  # nothing predicted
    assert (
        predict_fdrl.main(
            ["--model", str(saved.folder), "--input", str(manifest), "--output", str(tmp_path / "predictions.txt")]
        )
        == 2
    )  # bad arguments


# ----- (e) the CLI refuses bad arguments before writing anything ----------------------------------------------------
def run_cli(caplog, *argv):
    """`fdrl.cli.predict.main(argv)` in this process: (exit status, its error messages)."""
    from fdrl.cli import predict

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="fdrl.cli.predict"):
        status = predict.main([str(arg) for arg in argv])
    return status, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def write_manifest(path, saved, text_key="text"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps({"id": f"clip{i}", "audio": audio, text_key: text}) + "\n"
            for i, (audio, text) in enumerate(saved.files)
        )
    )
    return path


def test_cli_refuses_an_output_that_is_its_input(saved, tmp_path, caplog):
    """Issue 12, item 7: `--output` equal to `--input` overwrote the manifest with predictions."""
    manifest = write_manifest(tmp_path / "data" / "manifest.jsonl", saved)
    original = manifest.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(manifest)
    os.link(manifest, tmp_path / "hardlink.jsonl")
    spellings = [
        manifest,
        tmp_path / "data" / ".." / "data" / "manifest.jsonl",
        tmp_path / "link.jsonl",
        tmp_path / "hardlink.jsonl",
    ]
    for output in spellings:
        for overwrite in ("false", "true"):  # --overwrite never applies to the input
            status, messages = run_cli(
                caplog, "--model", saved.folder, "--input", manifest, "--output", output, "--overwrite", overwrite
            )
            assert status == 2
            assert messages == [
                f"--output {output} would overwrite the --input manifest {manifest} (the same file): "
                "write the predictions to another file"
            ]
    assert manifest.read_bytes() == original
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "hardlink.jsonl", "link.jsonl", "manifest.jsonl"]


def test_cli_keeps_an_existing_output_unless_told(saved, tmp_path, caplog):
    manifest = write_manifest(tmp_path / "manifest.jsonl", saved)
    output = tmp_path / "predictions.csv"
    output.write_text("the user's own file\n")
    status, messages = run_cli(caplog, "--model", saved.folder, "--input", manifest, "--output", output)
    assert status == 2
    assert messages == [
        f"--output {output} already exists: pass --overwrite true to replace it, or choose another file"
    ]
    assert output.read_text() == "the user's own file\n" and not Path(f"{output}.errors.json").exists()
    status, _ = run_cli(
        caplog,
        "--model",
        saved.folder,
        "--input",
        manifest,
        "--output",
        output,
        "--device",
        "cpu",
        "--overwrite",
        "true",
    )
    assert status == 0
    with open(output, newline="") as f:
        assert [row["id"] for row in csv.DictReader(f)] == ["clip0", "clip1", "clip2"]


def test_cli_names_a_misnamed_column(saved, tmp_path, caplog):
    """Issue 12, item 7: `--text_column transcript` absent from the manifest skipped every row without naming it."""
    manifest = write_manifest(tmp_path / "manifest.jsonl", saved)
    output = tmp_path / "predictions.jsonl"
    present = "its columns: 'id', 'audio', 'text'"
    cases = {
        ("--text_column", "transcript"): f"{manifest} has no 'transcript' column ({present}); pass --text_column "
        "<name>, or --asr_model to transcribe the speech",
        ("--audio_column", "path"): f"{manifest} has no 'path' column ({present}); pass --audio_column <name>",
        ("--id_column", "utterance"): f"{manifest} has no 'utterance' column ({present}); pass --id_column <name>",
    }
    for flag, message in cases.items():
        status, messages = run_cli(caplog, "--model", saved.folder, "--input", manifest, "--output", output, *flag)
        assert (status, messages) == (2, [message])
    assert not output.exists() and not Path(f"{output}.errors.json").exists()


def test_cli_names_a_missing_model_folder(saved, tmp_path, caplog):
    """Issue 12, item 8: a missing --model exited 1 with "Repo id must be in the form..."."""
    manifest = write_manifest(tmp_path / "manifest.jsonl", saved)
    output = tmp_path / "predictions.jsonl"
    (tmp_path / "no_config").mkdir()
    missing = tmp_path / "outputs" / "fold1"
    cases = {  # issue 18, cause 10: the folder "does not exist"
        missing: f"--model {missing}: the model folder {missing} does not exist",
        manifest: f"--model {manifest}: {manifest} is a file, not a model folder (give the folder that holds "
        "config.json)",
        tmp_path / "no_config": f"--model {tmp_path / 'no_config'}: {tmp_path / 'no_config'} has no config.json: not "
        "a saved model folder",
    }
    for model, message in cases.items():
        status, messages = run_cli(caplog, "--model", model, "--input", manifest, "--output", output)
        assert (status, messages) == (2, [message])
    status, messages = run_cli(caplog, "--model", "nobody/no-such-fdrl-model", "--input", manifest, "--output", output)
    assert status == 2 and messages[0].startswith("--model nobody/no-such-fdrl-model: cannot load the model (")
    assert not output.exists()


def test_processor_loads_without_a_model_type_warning(saved):
    """Issue 12, item 8: AutoTokenizer, without remote code, read the FDRL config.json into a plain config and warned
    "You are using a model of type `fdrl` to instantiate a model of type ``" on every predict."""
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        processor = FDRLProcessor.from_pretrained(saved.folder)
    finally:
        transformers_logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "to instantiate a model of type" in r.getMessage()]
    assert type(processor.tokenizer).__name__ == type(saved.processor.tokenizer).__name__
    assert processor.tokenizer.get_vocab() == saved.processor.tokenizer.get_vocab()


# ----- (f) issue 18: inference checks what training checks -----------------------------------------------------------
@pytest.fixture(scope="module")
def whisper_saved(tmp_path_factory):
    """A tiny FDRL on a Whisper encoder (one frame per 20 ms), saved and loaded with `pipeline(...)`."""
    from test_whisper_backbone import tiny_whisper_config

    folder = tmp_path_factory.mktemp("whisper_fdrl") / "model"
    torch.manual_seed(2)
    model = FDRLModel(tiny_fdrl_config(audio_config=tiny_whisper_config(), id2label=ID2LABEL)).eval()
    save_pipeline(model, FDRLProcessor.from_texts(TEXTS, vocab_size=99, audio_config=tiny_whisper_config()), folder)
    pipe = load_pipeline("multimodal-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    return SimpleNamespace(folder=folder, pipe=pipe, config=tiny_whisper_config())


def test_integer_arrays_are_scaled_by_their_range(whisper_saved):
    """Issue 18, cause 4: int16/int32 arrays were cast to float unscaled, 32768 times louder than the same audio as
    floats, and gave another prediction (Whisper's log-mel keeps the level; wav2vec2's layer norm would hide it)."""
    unnormalized = whisper_saved.pipe
    pcm16 = np.round(0.3 * np.random.default_rng(11).standard_normal(6000).clip(-3, 3) * 32767).astype(np.int16)
    as_float = pcm16.astype(np.float64) / 32768
    expected = by_class(unnormalized({"audio": as_float, "sampling_rate": 16000, "text": TEXTS[0]}))
    louder = by_class(unnormalized({"audio": as_float * 32768, "sampling_rate": 16000, "text": TEXTS[0]}))
    assert max(abs(a - b) for a, b in zip(expected, louder)) > 1e-3  # the scale reaches this model
    integer_inputs = [
        pcm16,
        pcm16.astype(np.int32) << 16,
        torch.from_numpy(pcm16),
        ((pcm16.astype(np.int32) >> 8) + 128).astype(np.uint8),
    ]  # 8-bit WAV samples are unsigned
    for samples in integer_inputs:
        scores = by_class(unnormalized({"audio": samples, "sampling_rate": 16000, "text": TEXTS[0]}))
        tolerance = 2e-2 if samples.dtype == np.uint8 else TOLERANCE  # 8 bits keep only the top of each sample
        np.testing.assert_allclose(scores, expected, atol=tolerance)


def test_too_short_follows_the_training_rule(whisper_saved, tmp_path):
    """Issue 18, cause 5: a 10 ms clip was predicted by a Whisper-based model although training's audio check
    refuses it. The pipeline and training's check now refuse and accept the same clips."""
    from fdrl.data.validation import check_file, minimum_samples

    assert minimum_samples(whisper_saved.config) == 320  # 20 ms: one Whisper encoder frame
    rng = np.random.default_rng(3)
    for samples, refused in ((160, True), (319, True), (320, False)):
        path = tmp_path / f"clip{samples}.wav"
        sf.write(path, (0.1 * rng.standard_normal(samples)).astype(np.float32), 16000)
        training = check_file(path, minimum_samples(whisper_saved.config))
        outputs = whisper_saved.pipe([{"audio": str(path), "text": TEXTS[0]}])
        if refused:
            assert training.startswith(f"too short: {1000 * samples / 16000:.1f} ms")
            assert outputs[0] == {"input": f"input 0 ({path})", "error": f"the audio is unusable: {training}"}
        else:
            assert training is None and "error" not in outputs[0][0]


def truncated_wav(path, seconds=0.5):
    write_audio(path, seconds, 16000)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])  # the header still promises every sample
    return path


def test_a_truncated_wav_is_refused(local_pipe, tmp_path):
    """Issue 18, cause 5: a WAV whose header promises more samples than it holds was predicted from what was there."""
    path = truncated_wav(tmp_path / "cut.wav")
    with pytest.raises(ValueError) as error:
        local_pipe({"audio": str(path), "text": TEXTS[0]})
    assert str(error.value) == (
        f"input ({path}): the file is truncated: the WAV header declares 8000 samples, the file holds 4000"
    )
    with pytest.raises(ValueError, match="^input: the file is truncated"):
        local_pipe({"audio": path.read_bytes(), "text": TEXTS[0]})


def test_a_transcript_without_a_readable_word_is_refused(saved, local_pipe):
    """Issue 18, cause 6: an emoji-only transcript (all [UNK]) was predicted with confidence 0.91; the app refused
    it. One rule now: processing_fdrl.transcript_problem."""
    outputs = local_pipe(
        [{"audio": saved.files[0][0], "text": TEXTS[0]}, {"audio": saved.files[0][0], "text": "😀🎉😡"}]
    )
    assert "error" not in outputs[0][0]
    assert outputs[1] == {
        "input": f"input 1 ({saved.files[0][0]})",
        "error": (
            "the transcript '😀🎉😡' has no word the model can read (its tokenizer reads it as [UNK] only; emoji and "
            "symbols are not words): pass the words spoken as 'text'"
        ),
    }


def damaged_copy(saved, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(saved.folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])  # a copy cut short
    return folder, weights


def test_a_damaged_weights_file_is_named(saved, tmp_path, caplog):
    """Issue 18, cause 8: a corrupt model.safetensors gave a bare SafetensorError (pipeline, fdrl-predict)."""
    folder, weights = damaged_copy(saved, tmp_path)
    header = int.from_bytes(weights.read_bytes()[:8], "little")
    assert header > 5000 - 8  # the cut falls inside the header
    message = (
        f"the weights file {weights} is damaged (its header claims {header} bytes, but only 4992 follow): "
        "copy or save the model again"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_pipeline("multimodal-emotion-recognition", model=str(folder), trust_remote_code=True, device="cpu")
    manifest = write_manifest(tmp_path / "manifest.jsonl", saved)
    status, messages = run_cli(caplog, "--model", folder, "--input", manifest, "--output", tmp_path / "p.csv")
    assert (status, messages) == (2, [f"--model {folder}: {message}"])  # exit 2, as the docs say
    assert not (tmp_path / "p.csv").exists()


def test_a_folder_that_is_not_an_fdrl_model_is_named(saved, tmp_path, caplog):
    """Issue 18, cause 9: a Whisper folder as --model built a model and skipped every clip as "too short"."""
    from test_whisper_backbone import tiny_whisper_config
    from transformers import WhisperForConditionalGeneration

    whisper = tmp_path / "whisper-base"
    WhisperForConditionalGeneration(tiny_whisper_config()).save_pretrained(whisper)
    manifest = write_manifest(tmp_path / "manifest.jsonl", saved)
    for folder, model_type in ((whisper, "whisper"), (Path(saved.asr), "wav2vec2")):
        status, messages = run_cli(caplog, "--model", folder, "--input", manifest, "--output", tmp_path / "p.csv")
        assert (status, messages) == (
            2,
            [f"--model {folder}: {folder} is not an FDRL model folder (model_type {model_type})"],
        )
    asr_model = load_pipeline("automatic-speech-recognition", model=saved.asr, device="cpu").model
    with pytest.raises(ValueError, match=r"is not an FDRL model \(model_type wav2vec2\)"):
        MultimodalEmotionRecognitionPipeline(model=asr_model, processor=saved.processor, device="cpu")


def test_cli_refuses_a_manifest_it_cannot_read(saved, tmp_path, caplog):
    """Issue 18, cause 11: a manifest in Latin-1 gave a bare UnicodeDecodeError; a header-only one no message."""
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(f"audio,text\n{saved.files[0][0]},caf\xe9 cr\xe8me\n".encode("latin-1"))
    header_only = tmp_path / "header.csv"
    header_only.write_text("audio,text\n")
    offset = len(f"audio,text\n{saved.files[0][0]},caf".encode())
    cases = {
        latin1: f"{latin1} is not UTF-8 text (line 2: byte 0xe9 at offset {offset}): save it as UTF-8",
        header_only: f"{header_only} has no rows: a manifest needs a header and one row per utterance",
    }
    for manifest, message in cases.items():
        status, messages = run_cli(caplog, "--model", saved.folder, "--input", manifest, "--output", tmp_path / "p.csv")
        assert (status, messages) == (2, [message])
    assert not (tmp_path / "p.csv").exists()


def test_cli_skips_truncated_short_and_unreadable_inputs_like_training(whisper_saved, tmp_path):
    """Issue 18, causes 5 and 6 through fdrl-predict: each bad recording is skipped, named and counted."""
    from fdrl.cli import predict

    clips = tmp_path / "clips"
    clips.mkdir()
    write_audio(clips / "good.wav", 0.5, 16000)
    truncated_wav(clips / "cut.wav")
    write_audio(clips / "blip.wav", 0.01, 16000)
    write_audio(clips / "emoji.wav", 0.5, 16000, seed=4)
    for name, text in (("good", TEXTS[0]), ("cut", TEXTS[1]), ("blip", TEXTS[2]), ("emoji", "🙂🙃")):
        (clips / f"{name}.txt").write_text(text)
    output = tmp_path / "predictions.csv"
    assert (
        predict.main(
            ["--model", str(whisper_saved.folder), "--input", str(clips), "--output", str(output), "--device", "cpu"]
        )
        == 0
    )
    with open(output, newline="") as f:
        assert [row["id"] for row in csv.DictReader(f)] == ["good"]
    errors = {e["id"]: e["error"] for e in json.loads(Path(f"{output}.errors.json").read_text())["errors"]}
    assert errors == {
        "cut": "the file is truncated: the WAV header declares 8000 samples, the file holds 4000",
        "blip": "the audio is unusable: too short: 10.0 ms, the speech backbone needs at least 20.0 ms for one frame",
        "emoji": "the transcript '🙂🙃' has no word the model can read (its tokenizer reads it as [UNK] only; emoji and "
        "symbols are not words): pass the words spoken as 'text'",
    }
