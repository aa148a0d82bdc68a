"""The command-line arguments of `run_fdrl.py`: where the model and the data come from, FDRL's own settings, and
the training arguments. FDRL's settings are derived from `FDRLConfig` itself (its `__init__` signature and its
docstring), so a new config field is a new argument with no list to keep in sync."""

import inspect
import re
import sys
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Optional

from transformers import HfArgumentParser

from configuration_fdrl import FDRLConfig
from fdrl.data.corpus import DATASETS, FOLDS_NEEDED, folds_refused
from fdrl.data.labels import parse_labels
from processing_fdrl import check_audio_pad_multiple

from .trainer import FDRLTrainingArguments


# Fields of FDRLConfig that are not settings a user passes on the command line.
_NOT_ARGUMENTS = {"self", "kwargs", "audio_config", "text_config"}
_DOC_ENTRY = re.compile(r"^ {8}(\w+) \(`([^`]+)`[^)]*\):(.*?)(?=^ {8}\w+ \(`|\Z)", re.M | re.S)
PAD_MULTIPLE_FLAG = "--audio_pad_to_multiple_of_s"


def _config_docs():
    """{field: one-line help} from FDRLConfig's transformers-style docstring."""
    docs = {}
    for name, _, text in _DOC_ENTRY.findall(FDRLConfig.__doc__ or ""):
        docs[name] = " ".join(text.split())
    return docs


def _argument_type(default):
    if isinstance(default, bool):
        return Optional[bool]
    if isinstance(default, (int, float, str)):
        return Optional[type(default)]
    if isinstance(default, (tuple, list)):
        return Optional[list[type(default[0]) if default else str]]
    return Optional[str]


def config_argument_fields():
    """(name, type, field) for every FDRLConfig setting; default None means "keep the config's default"."""
    docs = _config_docs()
    fields = []
    for name, parameter in inspect.signature(FDRLConfig.__init__).parameters.items():
        if name in _NOT_ARGUMENTS or parameter.kind is parameter.VAR_KEYWORD:
            continue
        default = parameter.default
        help_text = docs.get(name, "") + (f" (FDRLConfig default: {default!r})" if default is not None else "")
        fields.append((name, _argument_type(default), field(default=None, metadata={"help": help_text.strip()})))
    return fields


CONFIG_FIELDS = tuple(name for name, _, _ in config_argument_fields())


@dataclass
class _ModelSources:
    """Where the model comes from."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "An FDRL checkpoint (local folder or Hub id) to fine-tune."}
    )
    audio_model: Optional[str] = field(
        default=None,
        metadata={
            "help": "Pretrained speech backbone: a wav2vec2/HuBERT/WavLM or Whisper checkpoint "
            "(Hub id or local folder, e.g. pretrained/whisper-base)."
        },
    )
    text_model: Optional[str] = field(
        default=None,
        metadata={"help": "Pretrained text backbone (Hub id or local folder, e.g. pretrained/all-MiniLM-L6-v2)."},
    )
    model_preset: Optional[str] = field(
        default=None,
        metadata={"help": "Random initialisation of a named size ('tiny', 'demo' or 'base'): tests and benchmarks."},
    )
    processor_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "A saved FDRLProcessor; by default it follows the model's source."}
    )
    vocab_size: int = field(default=2000, metadata={"help": "WordPiece vocabulary learnt for a preset model."})
    max_duration: float = field(default=16.0, metadata={"help": "Speech is truncated to this many seconds."})

    def __post_init__(self):
        sources = [bool(self.model_name_or_path), bool(self.audio_model or self.text_model), bool(self.model_preset)]
        if sum(sources) != 1:
            raise ValueError(
                "Give exactly one model source: --model_name_or_path (an FDRL checkpoint), --audio_model with "
                "--text_model (pretrained backbones), or --model_preset (random initialisation)"
            )
        if bool(self.audio_model) != bool(self.text_model):
            raise ValueError("--audio_model and --text_model go together")
        if not self.max_duration > 0:
            raise ValueError(f"--max_duration must be positive, got {self.max_duration}")
        self.config_overrides()  # every FDRL setting is checked now, before any data is read

    def config_overrides(self):
        """The FDRLConfig fields given on the command line, checked by building a config with them."""
        overrides = {name: getattr(self, name) for name in CONFIG_FIELDS if getattr(self, name) is not None}
        for name, value in overrides.items():
            if isinstance(value, list):
                overrides[name] = tuple(value)
        try:
            FDRLConfig(**overrides)
        except ValueError as error:
            raise ValueError(f"invalid FDRL setting: {error}".replace("`", "--", 1).replace("`", "", 1)) from None
        return overrides


ModelArguments = make_dataclass("ModelArguments", config_argument_fields(), bases=(_ModelSources,))
ModelArguments.__module__ = __name__  # picklable (worker processes of --parallel_runs receive the arguments)
ModelArguments.__doc__ = (
    "Where the model comes from, and FDRL's own settings (FDRLConfig; unset fields keep its defaults)."
)


@dataclass
class DataArguments:
    data_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "The corpus folder: IEMOCAP_full_release (or the demo corpus, same layout), or with "
            "--dataset meld the MELD.Raw folder."
        },
    )
    dataset: str = field(
        default="iemocap",
        metadata={
            "help": "What --data_dir holds: 'iemocap' (leave-one-session-out over --folds) or 'meld' (MELD's "
            "official train / dev / test splits, no --folds)."
        },
    )
    dataset_config: str = field(default="4class", metadata={"help": "IEMOCAP builder config: '4class' or 'all'."})
    manifest: Optional[str] = field(
        default=None, metadata={"help": "Your own data: a CSV or JSON-lines file with audio, text, label, session."}
    )
    labels: Optional[list[str]] = field(
        default=None,
        metadata={
            "help": "The classes in label-id order, comma-separated or as a list (`--labels neu,ang,sad`); a "
            "label outside them is refused. Default: the builder's own set (IEMOCAP's four, MELD's seven), "
            "or a manifest's sorted labels."
        },
    )
    strip_tags: bool = field(default=False, metadata={"help": "Remove tags such as [LAUGHTER] from transcripts."})
    max_text_length: int = field(default=128, metadata={"help": "Transcripts are truncated to this many tokens."})
    audio_pad_to_multiple_of_s: Optional[float] = field(
        default=None,
        metadata={
            "help": "When fine-tuning: pad each batch's audio to a multiple of this many seconds (Whisper: a whole "
            "number). On a GPU, fewer distinct input shapes make steps faster; see the README. Not used by the "
            "frozen protocol, whose backbones see one utterance at a time."
        },
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "The datasets cache folder."})
    rebuild_cache: bool = field(default=False, metadata={"help": "Rebuild the dataset cache even if it looks current."})
    test_transcripts: Optional[str] = field(
        default=None,
        metadata={
            "help": "Test on these transcripts instead of the corpus's: a JSON file written by "
            "`fdrl-wer --output` (its items' id and hypothesis), or a CSV/JSON-lines "
            "file with id and text columns. Training and validation keep the corpus's."
        },
    )
    skip_bad_audio: bool = field(
        default=False,
        metadata={
            "help": "Skip (and count, and name) utterances whose audio fails the check before "
            "training, instead of stopping with an error."
        },
    )

    def __post_init__(self):
        if bool(self.data_dir) == bool(self.manifest):
            raise ValueError("Give exactly one of --data_dir (IEMOCAP layout) or --manifest (your own data)")
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.dataset == "meld" and self.manifest:
            raise ValueError("--dataset meld reads --data_dir (the MELD.Raw folder), not --manifest")
        if self.dataset == "meld" and self.dataset_config != "4class":
            raise ValueError(f"--dataset_config {self.dataset_config} is the IEMOCAP builder's; MELD has one set")
        self.labels = _labels_argument(self.labels)
        if self.data_dir and not Path(self.data_dir).is_dir():
            raise FileNotFoundError(f"--data_dir {self.data_dir} does not exist or is not a folder")
        if self.manifest and not Path(self.manifest).is_file():
            raise FileNotFoundError(f"--manifest {self.manifest} does not exist or is not a file")
        if self.test_transcripts and not Path(self.test_transcripts).is_file():
            raise FileNotFoundError(f"--test_transcripts {self.test_transcripts} does not exist or is not a file")
        if self.max_text_length < 2:
            raise ValueError(f"--max_text_length must be at least 2, got {self.max_text_length}")
        if self.audio_pad_to_multiple_of_s is not None:  # the backbone's own rule: `check_audio_padding`
            check_audio_pad_multiple(self.audio_pad_to_multiple_of_s, name=PAD_MULTIPLE_FLAG)


def _labels_argument(value):
    """`--labels` as a tuple of class names: `neu,ang,sad`, `neu ang sad` (a list, as YAML gives) or a mix."""
    if value is None or isinstance(value, str):
        return parse_labels(value)
    return parse_labels(",".join(str(item) for item in value))


def check_folds(data_args, training_args):
    """`--folds` is needed for leave-one-session-out and refused for MELD, whose official splits are the runs."""
    if data_args.dataset == "meld" and training_args.folds:
        raise folds_refused(training_args.folds, "MELD")
    if data_args.dataset != "meld" and not training_args.folds:
        raise ValueError(FOLDS_NEEDED)


def check_audio_padding(model_args, data_args):
    """`--audio_pad_to_multiple_of_s` under the processor's rule for the run's speech backbone (Whisper: whole
    seconds), when the arguments are parsed rather than at the first training batch."""
    if data_args.audio_pad_to_multiple_of_s is None:
        return
    from fdrl.data.validation import audio_config_of
    from modeling_fdrl import speech_backbone

    input_name = speech_backbone(audio_config_of(model_args)).input_name
    check_audio_pad_multiple(data_args.audio_pad_to_multiple_of_s, input_name, PAD_MULTIPLE_FLAG)


ARGUMENT_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def read_argument_file(path):
    """{argument name: value} from a JSON or YAML argument file."""
    import json

    import yaml

    if not Path(path).is_file():
        raise FileNotFoundError(f"argument file {path} does not exist")
    text = Path(path).read_text()
    values = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values, got {type(values).__name__}")
    return values


def argument_files_as_flags(paths):
    """The argument files merged in order (a later file's value wins) as command-line flags."""
    values = {}
    for path in paths:
        values.update(read_argument_file(path))
    flags = []
    for name, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        flags += [f"--{name}", *(str(item) for item in items)]
    return flags


def parse_arguments(argv=None):
    """(ModelArguments, DataArguments, FDRLTrainingArguments) from a command line. It may start with JSON or YAML
    files, each naming part of a run (`run_fdrl.py examples/base.yaml experiments/ablations.yaml --seeds 0`): a
    later file's values win over an earlier one's, and flags win over every file."""
    parser = HfArgumentParser((ModelArguments, DataArguments, FDRLTrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    files = []
    while argv and argv[0].endswith(ARGUMENT_FILE_SUFFIXES):
        files.append(argv.pop(0))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        args=argument_files_as_flags(files) + argv
    )
    check_folds(data_args, training_args)
    check_audio_padding(model_args, data_args)
    return model_args, data_args, training_args


__all__ = ["CONFIG_FIELDS", "DataArguments", "ModelArguments", "check_audio_padding", "check_folds", "parse_arguments"]
