"""Shared fixtures: tiny backbone configs (the sizes of `fdrl.presets.TINY`), a small fixed batch, and one torch thread
(`one_thread`, the count the `--parallel_runs` workers run with)."""

import os
import sys
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

from transformers import BertConfig, Wav2Vec2Config  # noqa: E402

from fdrl.presets import AUDIO_COMMON, TINY  # noqa: E402


def tiny_audio_config(**overrides):
    return Wav2Vec2Config(**{**AUDIO_COMMON, **TINY["audio"], **overrides})


def tiny_text_config(**overrides):
    return BertConfig(**{"vocab_size": 99, "max_position_embeddings": 64, **TINY["text"], **overrides})


def tiny_fdrl_config(**overrides):
    from configuration_fdrl import FDRLConfig

    kwargs = dict(audio_config=tiny_audio_config(), text_config=tiny_text_config(), **TINY["fdrl"])
    kwargs.update(overrides)
    return FDRLConfig(**kwargs)


def make_batch(batch_size=4, seed=0, num_labels=4, vocab_size=99, with_labels=True):
    """Variable-length speech and text with padding masks, as the processor returns them."""
    generator = torch.Generator().manual_seed(seed)
    audio_lengths = [4000 - 600 * (i % 4) for i in range(batch_size)]
    text_lengths = [9 - 2 * (i % 3) for i in range(batch_size)]
    input_values = torch.zeros(batch_size, max(audio_lengths))
    audio_attention_mask = torch.zeros(batch_size, max(audio_lengths), dtype=torch.long)
    input_ids = torch.zeros(batch_size, max(text_lengths), dtype=torch.long)
    text_attention_mask = torch.zeros_like(input_ids)
    for i, (n_audio, n_text) in enumerate(zip(audio_lengths, text_lengths)):
        input_values[i, :n_audio] = torch.randn(n_audio, generator=generator)
        audio_attention_mask[i, :n_audio] = 1
        input_ids[i, :n_text] = torch.randint(5, vocab_size, (n_text,), generator=generator)
        text_attention_mask[i, :n_text] = 1
    batch = dict(
        input_values=input_values,
        audio_attention_mask=audio_attention_mask,
        input_ids=input_ids,
        text_attention_mask=text_attention_mask,
    )
    if with_labels:
        batch["labels"] = torch.arange(batch_size) % num_labels
    return batch


@pytest.fixture
def fdrl_config():
    return tiny_fdrl_config()


@pytest.fixture
def batch():
    return make_batch()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count the workers train with: "identical" is defined at this count
    yield
    torch.set_num_threads(threads)
