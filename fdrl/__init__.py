"""FDRL tooling around the flat Hub files: data, training protocol, evaluation, pretrained backbones, command lines.

The model itself lives in the flat remote-code modules at the repository root (``configuration_fdrl``,
``modeling_fdrl``, ``processing_fdrl``, ``pipeline_fdrl``), which a model repository on the Hub carries as they are.
Importing this package is cheap: sub-packages import torch and the Hugging Face stack only when used.
"""

__version__ = "0.1.0"
