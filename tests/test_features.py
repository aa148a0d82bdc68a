"""The frozen-backbone mode: pooled backbone outputs cached once, the same logits with and without the cache, and a
cache that a changed backbone or changed data never reads."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import datasets
import pytest
import torch
import transformers

from conftest import REPO, tiny_fdrl_config
from fdrl.data.corpus import fold_splits
from fdrl.data.iemocap import load_iemocap
from fdrl.training.features import cached_pooled_features
from fdrl.training.trainer import FDRLDataCollator
from iemocap_fixture import make_iemocap_fixture
from modeling_fdrl import FDRLModel
from processing_fdrl import FDRLProcessor


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    corpus = make_iemocap_fixture(root, sessions=(1, 2), utterances_per_dialog=4, defects=False)
    data = load_iemocap(corpus["data_dir"], cache_dir=str(root / "cache"))
    splits = fold_splits(data, 1, 0.3, seed=0)
    texts = splits["train"]["text"][:] + splits["validation"]["text"][:]
    processor = FDRLProcessor.from_texts(texts, vocab_size=80)
    return splits, processor


def _context(tmp_path):
    args = SimpleNamespace(feature_cache_dir=str(tmp_path / "features"), per_device_eval_batch_size=3, should_save=True)
    return SimpleNamespace(
        training_args=args,
        data_args=SimpleNamespace(max_text_length=64),
        config_kwargs=dict(hidden_size=16, fusion_num_heads=2, initializer_range=0.1),
    )


def _model(processor, seed=0):
    torch.manual_seed(seed)
    config = tiny_fdrl_config()
    config.text_config.vocab_size = len(processor.tokenizer)
    return FDRLModel(config).eval()


def test_the_cache_gives_the_same_logits_as_the_backbones(fold, tmp_path):
    splits, processor = fold
    model = _model(processor)
    cached = cached_pooled_features(model.audio_model, model.text_model, processor, splits, _context(tmp_path))
    assert {name: len(rows) for name, rows in cached.items()} == {name: len(s) for name, s in splits.items()}
    examples = [splits["test"][i] for i in range(4)]
    rows = cached["test"][:4]
    assert [r["id"] for r in rows] == [e["id"] for e in examples]
    with torch.no_grad():  # each utterance through the backbones alone, as it was cached
        direct = torch.cat([model(**FDRLDataCollator(processor, 64)([e])).logits for e in examples])
        from_cache = model(**FDRLDataCollator()(rows)).logits
    assert (direct - from_cache).abs().max().item() <= 1e-7  # measured 2.8e-9: the heads' matmul over 1 vs 4 rows
    # the backbones ran once: one cache file per modality for the union of the splits
    assert sorted(name.split("-")[0] for name in os.listdir(tmp_path / "features")) == ["audio", "text"]


def _count_forwards(module):
    """How many times `module` runs: a forward hook, the backbone itself untouched."""
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_a_second_fold_and_seed_read_the_cache(tmp_path):
    root = tmp_path / "corpus"
    corpus = make_iemocap_fixture(root, sessions=(1, 2), utterances_per_dialog=4, defects=False)
    data = load_iemocap(corpus["data_dir"], cache_dir=str(root / "cache"))
    first = fold_splits(data, 1, 0.3, seed=0)
    processor = FDRLProcessor.from_texts(first["train"]["text"][:] + first["validation"]["text"][:], vocab_size=80)
    model = _model(processor)
    audio_calls, text_calls = _count_forwards(model.audio_model), _count_forwards(model.text_model)
    context = _context(tmp_path)
    cached_pooled_features(model.audio_model, model.text_model, processor, first, context)
    total = sum(len(split) for split in first.values())
    assert (len(audio_calls), len(text_calls)) == (total, total)  # one forward per utterance and modality
    for fold, seed in ((2, 0), (1, 1), (2, 3)):  # other orders of the same utterances: nothing recomputed
        cached = cached_pooled_features(
            model.audio_model, model.text_model, processor, fold_splits(data, fold, 0.3, seed=seed), context
        )
        assert (len(audio_calls), len(text_calls)) == (total, total)
        assert sum(len(rows) for rows in cached.values()) == total
    assert len(os.listdir(tmp_path / "features")) == 2


def test_a_changed_backbone_or_changed_data_is_not_read_from_the_cache(fold, tmp_path):
    splits, processor = fold
    splits = dict(splits)  # the module's fixture stays as it was
    model = _model(processor)
    audio_calls, text_calls = _count_forwards(model.audio_model), _count_forwards(model.text_model)
    context = _context(tmp_path)
    total = sum(len(split) for split in splits.values())
    first = cached_pooled_features(model.audio_model, model.text_model, processor, splits, context)
    again = cached_pooled_features(model.audio_model, model.text_model, processor, splits, context)
    assert torch.equal(first["train"][0]["pooled_audio"], again["train"][0]["pooled_audio"])
    assert (len(audio_calls), len(text_calls)) == (total, total)  # reused
    assert len(os.listdir(tmp_path / "features")) == 2
    with torch.no_grad():
        model.audio_model.encoder.layers[0].feed_forward.output_dense.weight.mul_(-2.0)
    changed = cached_pooled_features(model.audio_model, model.text_model, processor, splits, context)
    assert len(os.listdir(tmp_path / "features")) == 3  # a new speech file; the text one is reused
    assert (len(audio_calls), len(text_calls)) == (2 * total, total)
    assert not torch.allclose(changed["train"][0]["pooled_audio"], first["train"][0]["pooled_audio"])
    assert torch.equal(changed["train"][0]["pooled_text"], first["train"][0]["pooled_text"])
    wav = splits["test"].cast_column("audio", datasets.Audio(decode=False))[0]["audio"]["path"]
    os.utime(wav, ns=(1, 1))  # the same file, rewritten: a new modification time, that utterance alone recomputed
    cached_pooled_features(model.audio_model, model.text_model, processor, splits, context)
    assert (len(audio_calls), len(text_calls)) == (2 * total + 1, total)
    assert len(os.listdir(tmp_path / "features")) == 3
    test_size = len(splits["test"])
    splits["test"] = splits["test"].remove_columns("text").add_column("text", ["okay"] * test_size)
    retold = cached_pooled_features(model.audio_model, model.text_model, processor, splits, context)  # new transcripts
    assert (len(audio_calls), len(text_calls)) == (2 * total + 1, total + test_size)
    assert torch.equal(retold["test"][0]["pooled_text"], retold["test"][1]["pooled_text"])
    assert not torch.equal(retold["test"][0]["pooled_text"], first["test"][0]["pooled_text"])
    assert sorted(name.split("-")[0] for name in os.listdir(tmp_path / "features")) == ["audio"] * 2 + ["text"]
    # another attention kernel (not in the config's JSON) is another file: these vectors differ in their last bits
    implementation = model.text_model.config._attn_implementation
    model.text_model.config._attn_implementation = "eager" if implementation != "eager" else "sdpa"
    cached_pooled_features(model.audio_model, model.text_model, processor, splits, context)
    assert (len(audio_calls), len(text_calls)) == (2 * total + 1, 2 * total + test_size)
    assert sorted(name.split("-")[0] for name in os.listdir(tmp_path / "features")) == ["audio"] * 2 + ["text"] * 2


def test_pooled_inputs_are_checked():
    model = FDRLModel(tiny_fdrl_config()).eval()
    with pytest.raises(ValueError, match="give both `pooled_audio` and `pooled_text`"):
        model(pooled_audio=torch.zeros(2, 32))
    with pytest.raises(ValueError, match=r"`pooled_text` must be \(batch, 32\), got shape \(2, 7\)"):
        model(pooled_audio=torch.zeros(2, 32), pooled_text=torch.zeros(2, 7))


def test_the_weights_hash_reads_each_tensors_buffer_as_the_bytes_it_holds():
    """`_hash_module` hands hashlib each tensor's buffer instead of a copy of its bytes: the digest is the one of the
    copied bytes (so a cache file written before keeps its name), for float32 and bfloat16 tensors and a
    non-contiguous one alike."""
    import hashlib

    from fdrl.training.features import _hash_module

    module = torch.nn.Linear(5, 3)
    module.register_buffer("scale", torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t())  # not contiguous
    module.config = SimpleNamespace(to_json_string=lambda: "{}")
    digest = hashlib.sha256()
    _hash_module(digest, module)
    expected = hashlib.sha256(b"{}")
    expected.update(json.dumps([None, torch.__version__, transformers.__version__]).encode())
    for name, tensor in sorted(module.state_dict().items()):
        expected.update(name.encode())
        expected.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    assert digest.hexdigest() == expected.hexdigest()
    with torch.no_grad():
        module.weight[0, 0] += 1.0
    changed = hashlib.sha256()
    _hash_module(changed, module)
    assert changed.hexdigest() != digest.hexdigest()


def test_the_cache_key_names_the_cpus_instruction_set(tmp_path):
    """Vectors extracted with AVX-512 and with AVX2 kernels differ in their last bits, so the same backbone,
    processor and settings get one cache file per instruction set torch dispatches on, and the same file again in
    another process on the same one."""
    script = tmp_path / "key.py"
    script.write_text(
        "import torch\n"
        "from fdrl.training.features import feature_key\n"
        "from processing_fdrl import FDRLProcessor\n"
        "torch.manual_seed(0)\n"
        "processor = FDRLProcessor.from_texts(['a happy day', 'a sad day'], vocab_size=40)\n"
        "from transformers import BertConfig, BertModel\n"
        "sizes = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=40)\n"
        "key = feature_key('text', BertModel(BertConfig(**sizes)), processor, [1], 1)\n"
        "print(torch.backends.cpu.get_cpu_capability(), key)\n"
    )

    def key(capability):
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        env.update({"PYTHONPATH": str(REPO), **({"ATEN_CPU_CAPABILITY": capability} if capability else {})})
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
        return tuple(out.stdout.split())

    default, again = key("default"), key("default")
    assert default[0] == "DEFAULT" and again == default and len(default[1]) == 32
    native = key(None)  # the CPU's own
    if native[0] == "DEFAULT":
        pytest.skip("this CPU has no vector instruction set beyond torch's default kernels")
    assert native[1] != default[1]
