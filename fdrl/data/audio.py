"""Decoding the audio value of a dataset example, whatever `datasets` handed over: a torchcodec `AudioDecoder`
(datasets 5), or a `{"array", "sampling_rate"}` dict."""

import numpy as np


SAMPLING_RATE = 16000  # every backbone of the project reads 16 kHz audio


def decode_audio(audio, name):
    """(samples, sampling rate) of one example's audio: a (samples,) array for mono, (channels, samples) otherwise.
    An undecodable value is a ValueError that names the example."""
    try:
        if hasattr(audio, "get_all_samples"):  # torchcodec AudioDecoder (datasets 5)
            samples = audio.get_all_samples()
            data = samples.data.numpy()
            return (data[0] if data.shape[0] == 1 else data), int(samples.sample_rate)
        return np.asarray(audio["array"]), int(audio["sampling_rate"])
    except Exception as error:
        raise ValueError(f"could not decode the audio of example {name!r}: {error}") from error
