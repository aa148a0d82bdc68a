"""What the corpus builders (`iemocap.py`, `meld.py`) share: a `datasets` builder over a folder the user unpacked,
whose cache is keyed by the folder's absolute path and by a fingerprint of what the builder reads from it."""

import os

import datasets


class LocalFolderBuilder(datasets.GeneratorBasedBuilder):
    """A builder of a corpus from a local folder. `data_dir` is made absolute (the cache is keyed by it, and an audio
    column may store paths below it), and the config's `input_fingerprint` is set from `self.input_fingerprint`, so a
    changed corpus is built anew instead of read stale from the cache. A subclass defines `input_fingerprint`."""

    def __init__(self, *args, data_dir=None, **kwargs):
        if data_dir is not None:
            data_dir = os.path.abspath(os.path.expanduser(str(data_dir)))
            if os.path.isdir(data_dir):  # else _split_generators names the problem
                kwargs.setdefault("input_fingerprint", self.input_fingerprint(data_dir))
        super().__init__(*args, data_dir=data_dir, **kwargs)

    def input_fingerprint(self, data_dir):
        raise NotImplementedError(f"{type(self).__name__} must say what its cache depends on")


def prepare(builder, rebuild=False):
    """The builder's `DatasetDict`, built now or read from its cache (`rebuild`: built anew even if current)."""
    builder.download_and_prepare(download_mode="force_redownload" if rebuild else None)
    return builder.as_dataset()
