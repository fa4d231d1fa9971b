"""Models: the built-ins, and `build_model`, which fills data facts into any factory.

A registered model factory may take `num_classes`, `input_shape` and `in_channels`;
brickwork supplies them from the dataset unless the config sets them.
"""

from brickwork.models.build import build_model, initialize_weights, save_model_files

__all__ = ["build_model", "initialize_weights", "save_model_files"]
