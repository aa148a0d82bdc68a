#!/usr/bin/env python
"""Train and evaluate FDRL under the leave-one-session-out protocol.

    accelerate launch run_fdrl.py --data_dir /data/IEMOCAP_full_release \\
        --audio_model facebook/wav2vec2-base --text_model bert-base-uncased \\
        --folds 1,2,3,4,5 --output_dir outputs/fdrl-iemocap

Arguments can also come from a JSON or YAML file: `accelerate launch run_fdrl.py examples/demo.yaml`.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import datasets
import transformers
from transformers import HfArgumentParser

from protocol_fdrl import run_protocol
from trainer_fdrl import FDRLTrainingArguments


logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Where the model comes from, and FDRL's own settings (FDRLConfig; unset fields keep its defaults)."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "An FDRL checkpoint (local folder or Hub id) to fine-tune."}
    )
    audio_model: Optional[str] = field(
        default=None, metadata={"help": "Pretrained speech backbone, e.g. facebook/wav2vec2-base or a local folder."}
    )
    text_model: Optional[str] = field(
        default=None, metadata={"help": "Pretrained text backbone, e.g. bert-base-uncased or a local folder."}
    )
    model_preset: Optional[str] = field(
        default=None, metadata={"help": "Random initialisation of a named size: 'tiny', 'demo' or 'base'."}
    )
    processor_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "A saved FDRLProcessor; by default it follows the model's source."}
    )
    vocab_size: int = field(default=2000, metadata={"help": "WordPiece vocabulary learnt for a preset model."})
    max_duration: float = field(default=16.0, metadata={"help": "Speech is truncated to this many seconds."})
    hidden_size: Optional[int] = field(default=None, metadata={"help": "Width d of the representations."})
    alpha: Optional[float] = field(default=None, metadata={"help": "Weight of the adversarial alignment (1.0)."})
    beta: Optional[float] = field(default=None, metadata={"help": "Weight of L_p + L_d (0.5)."})
    gamma: Optional[float] = field(default=None, metadata={"help": "Weight of the fine-grained predictor (1.0)."})
    mu: Optional[float] = field(default=None, metadata={"help": "Initial (or fixed) dynamic factor (0.5)."})
    dynamic_factor_mode: Optional[str] = field(default=None, metadata={"help": "'daan', 'paper' or 'fixed'."})
    a_distance_proxy: Optional[str] = field(default=None, metadata={"help": "'error' or 'loss' (eq. 6-7)."})
    grl_schedule: Optional[str] = field(default=None, metadata={"help": "'dann' or 'constant'."})
    grl_lambda: Optional[float] = field(default=None, metadata={"help": "Scale of the reversal coefficient."})
    orthogonality: Optional[str] = field(default=None, metadata={"help": "'normalized' or 'raw' (eq. 10)."})
    use_global_discriminator: Optional[bool] = field(default=None, metadata={"help": "L_g on/off (ablation S2)."})
    use_local_discriminators: Optional[bool] = field(default=None, metadata={"help": "L_l on/off (ablation S3)."})
    use_modality_discriminator: Optional[bool] = field(default=None, metadata={"help": "L_p on/off."})
    use_orthogonality: Optional[bool] = field(default=None, metadata={"help": "L_d on/off."})
    use_predictor: Optional[bool] = field(default=None, metadata={"help": "L_f on/off."})
    fusion_inputs: Optional[str] = field(default=None, metadata={"help": "'all', 'shared' or 'private' (S4/S5)."})
    fusion_num_heads: Optional[int] = field(default=None, metadata={"help": "Heads of the fusion attention."})
    classifier_dropout: Optional[float] = field(default=None, metadata={"help": "Dropout before the classifier."})
    text_pooling: Optional[str] = field(default=None, metadata={"help": "'mean' or 'cls'."})
    freeze_feature_encoder: Optional[bool] = field(
        default=None, metadata={"help": "Freeze wav2vec2's convolutional feature encoder."}
    )
    initializer_range: Optional[float] = field(default=None, metadata={"help": "Init std of FDRL's own layers."})

    def __post_init__(self):
        sources = [bool(self.model_name_or_path), bool(self.audio_model or self.text_model), bool(self.model_preset)]
        if sum(sources) != 1:
            raise ValueError(
                "Give exactly one model source: --model_name_or_path (an FDRL checkpoint), --audio_model with "
                "--text_model (pretrained backbones), or --model_preset (random initialisation)"
            )
        if bool(self.audio_model) != bool(self.text_model):
            raise ValueError("--audio_model and --text_model go together")


@dataclass
class DataArguments:
    data_dir: Optional[str] = field(
        default=None, metadata={"help": "IEMOCAP_full_release folder, or the demo corpus (same layout)."}
    )
    dataset_config: str = field(default="4class", metadata={"help": "IEMOCAP builder config: '4class' or 'all'."})
    manifest: Optional[str] = field(
        default=None, metadata={"help": "Your own data: a CSV or JSON-lines file with audio, text, label, session."}
    )
    strip_tags: bool = field(default=False, metadata={"help": "Remove tags such as [LAUGHTER] from transcripts."})
    max_text_length: int = field(default=128, metadata={"help": "Transcripts are truncated to this many tokens."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "The datasets cache folder."})

    def __post_init__(self):
        if bool(self.data_dir) == bool(self.manifest):
            raise ValueError("Give exactly one of --data_dir (IEMOCAP layout) or --manifest (your own data)")
        if self.data_dir and not Path(self.data_dir).is_dir():
            raise FileNotFoundError(f"--data_dir {self.data_dir} does not exist or is not a folder")
        if self.manifest and not Path(self.manifest).is_file():
            raise FileNotFoundError(f"--manifest {self.manifest} does not exist or is not a file")


def parse_arguments(argv=None):
    parser = HfArgumentParser((ModelArguments, DataArguments, FDRLTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(yaml_file=argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv=None):
    # Arguments: checked before anything is loaded or trained
    model_args, data_args, training_args = parse_arguments(argv)
    training_args.fold_list(), training_args.seed_list()

    # Logging
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    if training_args.disable_tqdm:  # the protocol's own bar stays; shard-writing and dataset bars go
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    logger.info(f"process {training_args.process_index} of {training_args.world_size}, device {training_args.device}")

    # The protocol: every fold (and seed), the summary, the Hub folder and the push
    return run_protocol(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
