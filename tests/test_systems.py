"""The systems table: each entry carries what the protocol needs (no `kind` switches), and a computed system pulls in
the systems it reads."""

import hashlib

import pytest
import torch
from transformers import AutoModel, set_seed

from configuration_fdrl import FDRLConfig
from conftest import tiny_audio_config, tiny_text_config
from fdrl.training.systems import (
    SYSTEMS,
    BackboneClassifier,
    BackboneDraws,
    System,
    build_system_model,
    reference_system,
    resolve_systems,
)
from fdrl.training.trainer import FDRLTrainer, SystemTrainer
from modeling_fdrl import FDRLModel, drop_pooler


def test_every_system_either_trains_or_is_computed_from_others():
    for system in SYSTEMS.values():
        assert system.trains != (system.combine is not None), system.name
        assert all(name in SYSTEMS for name in system.requires), system.name
    assert [s.name for s in SYSTEMS.values() if s.is_fdrl] == ["S0", "S1", "S2", "S3", "S4", "S5", "S6"]
    assert {s.name: s.modalities for s in SYSTEMS.values() if s.unimodal} == {"speech": ("audio",), "text": ("text",)}
    assert {s.name for s in SYSTEMS.values() if s.trainer_class is FDRLTrainer} == {f"S{i}" for i in range(7)}
    assert SYSTEMS["concat"].trainer_class is SystemTrainer and SYSTEMS["concat"].modalities == ("audio", "text")


def test_resolve_adds_what_late_fusion_reads_and_the_reference_follows():
    assert [s.name for s in resolve_systems(["S0", "late_fusion"])] == ["speech", "text", "S0", "late_fusion"]
    assert [s.name for s in resolve_systems(["text", "late_fusion"])] == ["speech", "text", "late_fusion"]
    assert reference_system(resolve_systems(["speech", "S3", "S2"])) == "S3"
    assert reference_system(resolve_systems(["S2", "S0"])) == "S0"
    assert reference_system(resolve_systems(["speech", "text"])) is None
    with pytest.raises(ValueError, match=r"unknown system\(s\) \['S9'\]"):
        resolve_systems(["S0", "S9"])


def test_a_new_system_is_one_entry():
    audio, text = AutoModel.from_config(tiny_audio_config()), AutoModel.from_config(tiny_text_config())
    kwargs = dict(id2label={0: "a", 1: "b", 2: "c"}, hidden_size=16, fusion_num_heads=2)
    speech = build_system_model(SYSTEMS["speech"], kwargs, audio, text)
    assert isinstance(speech, BackboneClassifier) and speech.text_model is None and speech.audio_model is audio
    assert speech.classifier.in_features == 32 and speech.classifier.out_features == 3
    ablation = build_system_model(SYSTEMS["S1"], kwargs, audio, text)
    assert isinstance(ablation, FDRLModel) and (ablation.config.alpha, ablation.config.beta) == (0.0, 0.0)
    text_only = System(
        "text_wide",
        "text, wider dropout",
        build=SYSTEMS["text"].build,
        modalities=("text",),
        config_overrides=dict(classifier_dropout=0.5),
    )
    model = build_system_model(text_only, kwargs, audio, text)
    assert model.audio_model is None and model.dropout.p == 0.5
    with pytest.raises(ValueError, match="'late_fusion' is not trained"):
        build_system_model(SYSTEMS["late_fusion"], kwargs, audio, text)


def _tensors(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _config(audio, text, **kwargs):
    return FDRLConfig(audio_config=audio.config, text_config=text.config, **kwargs)


def test_backbone_draws_are_paid_once_per_random_state_and_every_build_equals_a_full_build():
    """`FDRLModel(config)` draws random backbones, then its heads. Built around given backbones with the draws
    kept by `BackboneDraws`, the heads and every later draw are those of that full build, bit for bit; the draws
    are paid once per random state, whatever the heads' config (an ablation)."""
    audio, text = AutoModel.from_config(tiny_audio_config()), AutoModel.from_config(tiny_text_config())
    drop_pooler(text)  # as FDRL holds it
    sources = {**_tensors(audio), **{f"text.{k}": v for k, v in _tensors(text).items()}}
    kwargs = dict(id2label={0: "a", 1: "b", 2: "c"}, hidden_size=16, fusion_num_heads=2)
    draws = BackboneDraws()
    for heads in (kwargs, {**kwargs, "alpha": 0.0, "use_local_discriminators": False}):
        set_seed(5)
        full = FDRLModel(_config(audio, text, **heads))  # random backbones, then the heads
        expected, next_draw = _tensors(full), torch.rand(8)
        for build in range(3):  # the first build of all draws; the others set the kept state
            set_seed(5)
            model = FDRLModel.from_encoders_pretrained(audio, text, draw_backbones=draws, **heads)
            assert model.audio_model is audio and model.text_model is text
            tensors = _tensors(model)
            assert tensors.keys() == expected.keys()
            head_names = [name for name in expected if not name.startswith(("audio_model.", "text_model."))]
            assert len(head_names) > 20
            assert [name for name in head_names if not torch.equal(tensors[name], expected[name])] == []
            assert torch.equal(torch.rand(8), next_draw), build
            assert (draws.draws, len(draws.states)) == (1, 1)
        set_seed(5)  # and the default, which draws every time, builds the same model
        default = FDRLModel.from_encoders_pretrained(audio, text, **heads)
        assert torch.equal(default.fusion.classifier.weight, expected["fusion.classifier.weight"])
        assert torch.equal(torch.rand(8), next_draw)
    after = {**_tensors(audio), **{f"text.{k}": v for k, v in _tensors(text).items()}}
    assert sources.keys() == after.keys()
    assert [name for name in sources if not torch.equal(sources[name], after[name])] == []  # given, untouched
    set_seed(6)  # another seed, another key: other heads
    other = FDRLModel.from_encoders_pretrained(audio, text, draw_backbones=draws, **kwargs)
    assert (draws.draws, len(draws.states)) == (2, 2)
    assert not torch.equal(other.fusion.classifier.weight, expected["fusion.classifier.weight"])
    with pytest.raises(ValueError, match="give both `audio_model` and `text_model`"):
        FDRLModel(_config(audio, text, **kwargs), audio_model=audio)


def _random_state_digest(seed):
    set_seed(seed)
    return hashlib.sha256(torch.get_rng_state().numpy()).digest()


def test_backbone_draws_keep_only_the_latest_keys():
    audio, text = AutoModel.from_config(tiny_audio_config()), AutoModel.from_config(tiny_text_config())
    config = _config(audio, text, id2label={0: "a", 1: "b"}, hidden_size=16, fusion_num_heads=2)
    draws = BackboneDraws(kept=2)
    for seed in (1, 2, 3, 2):  # 3 evicts 1 (the oldest); the second 2 is a hit, and becomes the latest
        set_seed(seed)
        draws(config)
    assert [key[0] for key in draws.states] == [_random_state_digest(3), _random_state_digest(2)]
    assert draws.draws == 3
    set_seed(1)
    draws(config)
    assert [key[0] for key in draws.states] == [_random_state_digest(2), _random_state_digest(1)]
    assert draws.draws == 4
