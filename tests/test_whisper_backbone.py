"""Whisper's encoder as FDRL's speech backbone: the processor's log-mel inputs, variable length with masked padding,
loading from Whisper checkpoints, the collator and the pipeline, and the remote-code round trip."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoFeatureExtractor,
    AutoTokenizer,
    BertModel,
    Wav2Vec2FeatureExtractor,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperModel,
)

from configuration_fdrl import FDRLConfig
from conftest import REPO, tiny_audio_config, tiny_text_config
from fdrl.training.systems import BackboneClassifier
from fdrl.training.trainer import FDRLDataCollator
from modeling_fdrl import FDRLModel, FDRLWhisperEncoder
from pipeline_fdrl import MultimodalEmotionRecognitionPipeline, save_pipeline
from pretrained_fixture import pretrained, pretrained_dir  # noqa: F401
from processing_fdrl import FDRLProcessor


TEXTS = ["I am so happy today", "this is terrible news", "okay fine whatever", "why would you do that"]
LENGTHS = [11200, 20800, 35200, 6400]  # 0.7, 1.3, 2.2 and 0.4 s at 16 kHz


def tiny_whisper_config(**overrides):
    kwargs = dict(
        d_model=32,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=37,
        num_mel_bins=80,
        vocab_size=100,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=2,
    )
    kwargs.update(overrides)
    return WhisperConfig(**kwargs)


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(
        audio_config=tiny_whisper_config(),
        text_config=tiny_text_config(),
        hidden_size=16,
        fusion_num_heads=2,
        initializer_range=0.1,
    )
    return FDRLModel(FDRLConfig(**{**kwargs, **overrides})).eval()


def _processor(**kwargs):
    return FDRLProcessor.from_texts(TEXTS, vocab_size=60, audio_config=tiny_whisper_config(), **kwargs)


def _clips(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def _relative_difference(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ----- the processor ------------------------------------------------------------------------------------------------
def test_processor_gives_log_mel_padded_to_whole_seconds_not_30():
    processor = _processor()
    batch = processor(audio=_clips(), text=TEXTS, sampling_rate=16000)
    assert set(batch) == {
        "input_features",
        "audio_attention_mask",
        "input_ids",
        "token_type_ids",
        "text_attention_mask",
    }
    assert processor.model_input_names[:2] == ["input_features", "audio_attention_mask"]
    assert batch["input_features"].shape == (4, 80, 300)  # 2.2 s + 33 ms -> 3 s = 300 mel frames
    assert batch["audio_attention_mask"].sum(1).tolist() == [70, 130, 220, 40]  # 100 mel frames per second
    alone = processor(audio=_clips([15840])[0], sampling_rate=16000)  # 0.99 s: the margin takes it to 2 s
    assert alone["input_features"].shape == (1, 80, 200)
    long = processor(audio=_clips([35 * 16000])[0], sampling_rate=16000, max_duration=float("inf"))
    assert long["input_features"].shape == (1, 80, 3000) and long["audio_attention_mask"].sum() == 3000  # 30 s


def test_whisper_windows_pad_to_a_multiple_of_whole_seconds():
    """The 2.2 s clip's 3 s window becomes 4 s with `audio_pad_to_multiple_of_s=2`, 30 s stays the cap, the masks
    keep 100 real frames a second, and half seconds are refused: Whisper's windows are whole seconds."""
    processor = _processor()
    batch = processor(audio=_clips(), sampling_rate=16000, audio_pad_to_multiple_of_s=2)
    assert batch["input_features"].shape == (4, 80, 400)
    assert batch["audio_attention_mask"].sum(1).tolist() == [70, 130, 220, 40]
    plain = processor(audio=_clips(), sampling_rate=16000)
    for i, frames in enumerate([70, 130, 220, 40]):  # every real frame as without the extra second
        assert torch.equal(batch["input_features"][i, :, :frames], plain["input_features"][i, :, :frames])
    long = _clips([29 * 16000])[0]
    capped = processor(audio=long, sampling_rate=16000, max_duration=float("inf"), audio_pad_to_multiple_of_s=7)
    assert capped["input_features"].shape == (1, 80, 3000)  # 35 s would be past Whisper's 30
    with pytest.raises(ValueError, match="Whisper's windows are whole seconds, give a whole number"):
        processor(audio=_clips(), sampling_rate=16000, audio_pad_to_multiple_of_s=0.5)


def test_a_fractional_padding_multiple_is_refused_for_whisper_when_the_arguments_are_parsed(tmp_path):
    """Before any data is read (not at the first training batch); a whole number passes, and a wav2vec2 backbone
    takes fractions."""
    from fdrl.training.arguments import parse_arguments

    tiny_whisper_config().save_pretrained(tmp_path / "whisper")
    tiny_audio_config().save_pretrained(tmp_path / "wav2vec2")

    def parse(audio_model, multiple):
        return parse_arguments(
            ["--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--folds", "1"]
            + ["--audio_model", str(tmp_path / audio_model), "--text_model", str(tmp_path / "text")]
            + ["--audio_pad_to_multiple_of_s", str(multiple)]
        )

    with pytest.raises(
        ValueError, match=r"--audio_pad_to_multiple_of_s=0\.5: Whisper's windows are whole seconds, give a whole number"
    ):
        parse("whisper", 0.5)
    assert parse("whisper", 2)[1].audio_pad_to_multiple_of_s == 2.0
    assert parse("wav2vec2", 0.5)[1].audio_pad_to_multiple_of_s == 0.5
    assert not (tmp_path / "out").exists()


def test_unpadded_items_each_get_their_own_window():
    batch = _processor()(audio=_clips(), sampling_rate=16000, padding=False, return_tensors=None)
    assert [np.asarray(f).shape[-1] for f in batch["input_features"]] == [100, 200, 300, 100]


def test_processor_chooses_the_feature_extractor_of_the_backbone_and_keeps_it(tmp_path):
    whisper, wav2vec2 = _processor(), FDRLProcessor.from_texts(TEXTS, vocab_size=60, audio_config=tiny_audio_config())
    assert type(whisper.feature_extractor) is WhisperFeatureExtractor
    assert type(wav2vec2.feature_extractor) is Wav2Vec2FeatureExtractor
    assert wav2vec2.model_input_names[0] == "input_values"
    for name, processor in (("whisper", whisper), ("wav2vec2", wav2vec2)):
        processor.save_pretrained(tmp_path / name)
        loaded = FDRLProcessor.from_pretrained(tmp_path / name)
        assert type(loaded.feature_extractor) is type(processor.feature_extractor)
        assert loaded.audio_input_name == processor.audio_input_name
        clips = _clips()[:2]
        expected, got = processor(audio=clips, sampling_rate=16000), loaded(audio=clips, sampling_rate=16000)
        assert torch.equal(expected[processor.audio_input_name], got[processor.audio_input_name])


# ----- the encoder on the batch's own length ------------------------------------------------------------------------
def test_an_utterance_alone_and_padded_in_a_batch_give_the_same_result():
    model, processor = _model(), _processor()
    clips = _clips()
    with torch.no_grad():
        together = model(**processor(audio=clips, text=TEXTS, sampling_rate=16000))
        for i, clip in enumerate(clips):
            alone = model(**processor(audio=clip, text=TEXTS[i], sampling_rate=16000))
            for name in ("shared_audio", "private_audio", "logits"):
                assert _relative_difference(getattr(alone, name)[0], getattr(together, name)[i]) <= 1e-5, (i, name)


def test_without_the_mask_padding_would_change_the_features():
    """The masking is what makes the test above pass: Whisper's own encoder attends over the padding."""
    model, processor = _model(), _processor()
    batch = processor(audio=_clips(), sampling_rate=16000)
    alone = processor(audio=_clips()[0], sampling_rate=16000)
    with torch.no_grad():
        unmasked = model.audio_model(batch["input_features"]).last_hidden_state[0, :35]
        reference = model.audio_model(alone["input_features"], alone["audio_attention_mask"]).last_hidden_state[0, :35]
    assert _relative_difference(unmasked, reference) > 1e-3


def test_pooling_excludes_padded_frames():
    model, processor = _model(), _processor()
    batch = processor(audio=_clips(), sampling_rate=16000)
    with torch.no_grad():
        pooled = model.encode_audio(batch["input_features"], batch["audio_attention_mask"])
        hidden = model.audio_model(batch["input_features"], batch["audio_attention_mask"]).last_hidden_state
    assert hidden.shape[1] == 150  # 300 mel frames, the stride-2 convolution
    for i, frames in enumerate([35, 65, 110, 20]):
        torch.testing.assert_close(pooled[i], hidden[i, :frames].mean(0))


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_the_mask_works_with_each_attention_implementation(tmp_path, implementation):
    _model().save_pretrained(tmp_path)
    model = FDRLModel.from_pretrained(tmp_path, attn_implementation=implementation).eval()
    reference = _model()
    assert model.audio_model.config._attn_implementation == implementation
    batch = _processor()(audio=_clips(), sampling_rate=16000)
    with torch.no_grad():
        got = model.encode_audio(batch["input_features"], batch["audio_attention_mask"])
        expected = reference.encode_audio(batch["input_features"], batch["audio_attention_mask"])
    assert _relative_difference(got, expected) <= 1e-5


def test_more_than_30_seconds_is_refused_naming_the_limit():
    features = torch.zeros(1, 80, 3002)
    with pytest.raises(ValueError, match="1500 positions"):
        _model().audio_model(features)


def test_whisper_backbone_reads_input_features_only():
    model = _model()
    batch = _processor()(audio=_clips(), text=TEXTS, sampling_rate=16000)
    with pytest.raises(ValueError, match="reads `input_features`, got `input_values`"):
        model(input_values=torch.zeros(4, 16000), input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match=r"`input_features` must be \(batch, mel bins, frames\)"):
        model(input_features=batch["input_features"][:, 0], input_ids=batch["input_ids"])
    assert model.main_input_name == "input_features"


# ----- loading from Whisper checkpoints -----------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["folder", "WhisperModel", "WhisperEncoder"])
def test_from_encoders_pretrained_keeps_only_the_encoder_exactly(tmp_path, source):
    torch.manual_seed(1)
    whisper = WhisperForConditionalGeneration(tiny_whisper_config())
    whisper.save_pretrained(tmp_path / "whisper")
    BertModel(tiny_text_config()).save_pretrained(tmp_path / "text")
    audio = {
        "folder": str(tmp_path / "whisper"),
        "WhisperModel": WhisperModel.from_pretrained(tmp_path / "whisper"),
        "WhisperEncoder": whisper.model.encoder,
    }[source]
    model = FDRLModel.from_encoders_pretrained(
        audio, tmp_path / "text", hidden_size=16, fusion_num_heads=2, freeze_feature_encoder=True
    )
    assert type(model.audio_model) is FDRLWhisperEncoder
    source_state = whisper.model.encoder.state_dict()
    assert model.audio_model.state_dict().keys() == source_state.keys()
    for name, tensor in model.audio_model.state_dict().items():
        assert torch.equal(tensor, source_state[name]), name
    assert not any("decoder" in name for name in model.state_dict())
    assert model.audio_model.embed_positions.num_embeddings == 1500  # the checkpoint's whole table
    assert not any(p.requires_grad for p in model.audio_model.conv1.parameters())  # the "feature encoder"
    assert all(p.requires_grad for p in model.audio_model.layers.parameters())


@pretrained
def test_real_whisper_base_and_minilm_load_exactly(pretrained_dir):  # noqa: F811
    model = FDRLModel.from_encoders_pretrained(pretrained_dir / "whisper-base", pretrained_dir / "all-MiniLM-L6-v2")
    whisper = load_file(pretrained_dir / "whisper-base" / "model.safetensors")
    encoder = {name[len("model.encoder.") :]: t for name, t in whisper.items() if name.startswith("model.encoder.")}
    minilm = load_file(pretrained_dir / "all-MiniLM-L6-v2" / "model.safetensors")
    minilm = {name: t for name, t in minilm.items() if not name.startswith("pooler.") and "position_ids" not in name}
    for backbone, source in ((model.audio_model, encoder), (model.text_model, minilm)):
        state = backbone.state_dict()
        assert state.keys() == source.keys()
        assert max((state[name] - source[name]).abs().max().item() for name in source) == 0.0
    assert model.config.audio_config.d_model == 512 and model.config.text_config.hidden_size == 384
    # the processor as the training protocol builds it: each backbone's own feature extractor and tokenizer
    processor = FDRLProcessor(
        AutoFeatureExtractor.from_pretrained(pretrained_dir / "whisper-base"),
        AutoTokenizer.from_pretrained(pretrained_dir / "all-MiniLM-L6-v2"),
    )
    batch = processor(audio=_clips()[:2], text=TEXTS[:2], sampling_rate=16000)
    with torch.no_grad():
        out = model.eval()(**batch)
    assert batch["input_features"].shape == (2, 80, 200) and out.logits.shape == (2, 4)


# ----- training inputs: the collator and the single-modality baseline -----------------------------------------------
def test_collator_batches_feed_fdrl_and_the_speech_only_baseline():
    examples = [
        {"audio": {"array": clip, "sampling_rate": 16000}, "text": text, "label": i % 4}
        for i, (clip, text) in enumerate(zip(_clips(), TEXTS))
    ]
    batch = FDRLDataCollator(_processor())(examples)
    assert {"input_features", "audio_attention_mask", "labels"} <= set(batch) and "input_values" not in batch
    model = _model()
    assert torch.isfinite(model(**batch).loss)
    baseline = BackboneClassifier(model.config, audio_model=model.audio_model)
    assert baseline(**batch)["logits"].shape == (4, 4)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    batch = FDRLDataCollator(_processor())(
        [{"audio": {"array": c, "sampling_rate": 16000}, "text": t, "label": 1} for c, t in zip(_clips(), TEXTS)]
    )
    losses, grads = [], []
    for checkpointing in (False, True):
        model = _model(classifier_dropout=0.0)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        out = model(**batch)
        out.loss.backward()
        losses.append(out.loss.item())
        grads.append(model.audio_model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


# ----- the pipeline and the remote-code round trip ------------------------------------------------------------------
def test_pipeline_batched_equals_unbatched():
    pipe = MultimodalEmotionRecognitionPipeline(model=_model(), processor=_processor())
    inputs = [{"audio": clip, "sampling_rate": 16000, "text": text} for clip, text in zip(_clips(), TEXTS)]
    one_by_one = pipe(inputs)
    batched = pipe(inputs, batch_size=3)
    for a, b in zip(one_by_one, batched):
        assert [s["label"] for s in a] == [s["label"] for s in b]
        assert [s["score"] for s in a] == pytest.approx([s["score"] for s in b], abs=1e-6)


def test_remote_code_round_trip_in_a_fresh_offline_process(tmp_path):
    model, processor = _model(), _processor()
    folder = save_pipeline(model, processor, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["audio_config"]["model_type"] == "whisper" and not list(folder.glob("*.bin"))
    clips = _clips()
    np.savez(tmp_path / "clips.npz", *clips)
    with torch.no_grad():
        expected = model(**processor(audio=clips, text=TEXTS, sampling_rate=16000)).logits
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch
        from transformers import AutoModel, AutoProcessor, pipeline
        assert not any("modeling_fdrl" in m for m in sys.modules)
        folder = {str(folder)!r}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(model.audio_model).__name__ == "FDRLWhisperEncoder", type(model.audio_model)
        assert type(processor.feature_extractor).__name__ == "WhisperFeatureExtractor"
        saved = np.load({str(tmp_path / "clips.npz")!r})
        clips = [saved[f"arr_{{i}}"] for i in range(len(saved.files))]
        texts = {TEXTS!r}
        with torch.no_grad():
            logits = model(**processor(audio=clips, text=texts, sampling_rate=16000)).logits
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        print("DIFF", (logits - expected).abs().max().item())
        pipe = pipeline("multimodal-emotion-recognition", model=folder, trust_remote_code=True)
        out = pipe([{{"audio": c, "sampling_rate": 16000, "text": t}} for c, t in zip(clips, texts)], batch_size=2,
                   top_k=1)
        best = [model.config.id2label[int(i)] for i in expected.argmax(-1)]
        print("PIPELINE", [o[0]["label"] for o in out] == best)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if line.startswith(("DIFF", "PIPELINE")))
    assert float(lines["DIFF"]) <= 1e-5 and lines["PIPELINE"] == "True"


def test_the_fidelity_benchmark_runs_on_tiny_settings(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import bench_whisper_window

    threads = torch.get_num_threads()
    try:
        results = bench_whisper_window.main(["--tiny", "--threads", "1", "--output", str(tmp_path / "window.json")])
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "window.json").read_text())["script"] == "bench_whisper_window.py"
    assert 0.0 < results["cosine_masked"]["min"] <= 1.0 + 1e-6 and results["speedup_encoder_median"] > 0
    assert [row["own_window_s"] for row in results["per_clip"].values()] == [1.0, 2.0]


# ----- training with a Whisper speech backbone, end to end ------------------------------------------------------------
@pretrained
def test_one_fold_with_whisper_and_minilm_backbones_and_a_card_naming_them(pretrained_dir, tmp_path):  # noqa: F811
    import run_fdrl
    from iemocap_fixture import make_iemocap_fixture

    corpus = make_iemocap_fixture(tmp_path / "corpus", sessions=(1, 2), utterances_per_dialog=6)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(tiny_whisper_config()).save_pretrained(tmp_path / "whisper")
    WhisperFeatureExtractor().save_pretrained(tmp_path / "whisper")
    run_fdrl.main(
        [
            "--data_dir",
            str(corpus["data_dir"]),
            "--output_dir",
            str(tmp_path / "out"),
            "--cache_dir",
            str(tmp_path / "cache"),
            "--audio_model",
            str(tmp_path / "whisper"),
            "--text_model",
            str(pretrained_dir / "all-MiniLM-L6-v2"),
            "--folds",
            "2",
            "--num_train_epochs",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--use_cpu",
            "true",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
            "--validation_fraction",
            "0.3",
            "--dataloader_num_workers",
            "0",
            "--hidden_size",
            "32",
            "--fusion_num_heads",
            "2",
            "--train_sampling_strategy",
            "group_by_length",
        ]
    )
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "- sentence-transformers/all-MiniLM-L6-v2" in card.split("---")[1]  # base_model metadata: a Hub id
    assert (
        f"speech backbone `{tmp_path / 'whisper'}`, text backbone `sentence-transformers/all-MiniLM-L6-v2`, fine-tuned"
    ) in card
    processor = FDRLProcessor.from_pretrained(tmp_path / "out" / "model")
    assert processor.audio_input_name == "input_features"


def test_base_model_ids_come_from_hub_ids_and_materialised_folders(tmp_path):
    from fdrl.training.hub import base_model_id

    (tmp_path / "whisper-base").mkdir()
    (tmp_path / "whisper-base" / "fdrl_provenance.json").write_text('{"stands_for": "openai/whisper-base"}')
    assert base_model_id(tmp_path / "whisper-base") == "openai/whisper-base"
    assert base_model_id("openai/whisper-base") == "openai/whisper-base"
    assert base_model_id(str(tmp_path)) is None and base_model_id(None) is None
