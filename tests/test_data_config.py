"""DataConfig: defaults, resolution of the stride, validation messages, strict from_dict."""

import pytest

from vae.config import ConfigError
from vae.data import DataConfig


def test_defaults_follow_the_published_aitex_protocol():
    config = DataConfig(format="aitex", root="/data")
    assert (config.patch_size, config.stride, config.channels) == (256, 256, 1)
    assert (config.test_fraction, config.val_fraction) == (0.25, 0.2)
    assert (config.mask_threshold, config.min_defect_pixels, config.seed) == (127, 1, 0)


def test_stride_defaults_to_the_patch_size_and_follows_it_in_overrides():
    config = DataConfig(format="synthetic", patch_size=32)
    assert config.stride == 32
    assert config.with_overrides(patch_size=64).stride == 64
    assert DataConfig(format="synthetic", patch_size=64, stride=16).with_overrides(
        patch_size=48).stride == 16


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "png"}, "data.format='png' is invalid; choose one of ['synthetic', 'aitex', 'folder']"),
    ({"format": "aitex"}, "data.root is required for data.format='aitex'"),
    ({"patch_size": 4}, "data.patch_size=4 is invalid; allowed: an integer in [8, 4096]"),
    ({"patch_size": 32, "stride": 33}, "data.stride=33 is invalid; allowed: an integer in [1, 32]"),
    ({"channels": 2}, "data.channels=2 is invalid; allowed: 1 or 3"),
    ({"test_fraction": 1.0}, "data.test_fraction=1.0 is out of range; allowed [0, 1.0)"),
    ({"min_defect_pixels": 0}, "data.min_defect_pixels=0 is invalid"),
    ({"cache": "yes"}, "data.cache='yes' is invalid; allowed: true or false"),
    ({"patch_size": 128}, "does not fit the small synthetic set"),
])
def test_invalid_values_name_the_value_and_the_allowed_set(changes, message):
    with pytest.raises(ConfigError) as error:
        DataConfig(**{"patch_size": 64, **changes})
    assert message in str(error.value)


def test_from_dict_is_strict_and_round_trips():
    config = DataConfig(format="folder", root="/x", patch_size=64, seed=3)
    assert DataConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown data key\(s\) \['patchsize'\]; valid keys"):
        DataConfig.from_dict({"patchsize": 64})
