"""`data.normalize: model`: the image processor's mean and std, per channel, or a fix-it line."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from brickwork.data.hf_image import processor_normalization
from brickwork.errors import ConfigError


def _processor(**settings: object) -> object:
    from transformers import ViTImageProcessor

    return ViTImageProcessor(image_mean=[0.2, 0.4, 0.6], image_std=[0.3, 0.2, 0.1], **settings)


def test_rgb_data_take_the_processors_mean_and_std() -> None:
    assert processor_normalization(_processor(), 3) == ([0.2, 0.4, 0.6], [0.3, 0.2, 0.1])


def test_greyscale_data_take_the_channel_average_of_an_rgb_processor() -> None:
    mean, std = processor_normalization(_processor(), 1)
    assert mean == pytest.approx([0.4]) and std == pytest.approx([0.2])


def test_a_processor_that_does_not_normalise_gives_none() -> None:
    assert processor_normalization(_processor(do_normalize=False), 3) == (None, None)


def test_a_rescale_other_than_one_over_255_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"rescales by 0.5 .*set data.normalize: dataset"):
        processor_normalization(_processor(rescale_factor=0.5), 3)


def test_a_channel_count_the_processor_lacks_names_the_mode_to_set() -> None:
    with pytest.raises(
        ConfigError, match=r"normalises 3 channels and the data have 2; set data.mode: RGB"
    ):
        processor_normalization(_processor(), 2)
