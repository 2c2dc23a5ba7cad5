""""Cannot tell" is never "good": non-finite scores are rejects, a NaN threshold is refused,
and a model folder with NaN weights does not load."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import vae
from tests.support.checkpoints import make_model, tiny_config
from vae.score.calibration import Calibration, decide
from vae.score.cli import _threshold


def test_nan_and_infinite_scores_are_rejects():
    calibration = Calibration.fit(np.linspace(0.0, 1.0, 101), quantile=0.9)
    scores = np.array([0.1, np.nan, np.inf, -np.inf, 0.95])
    assert calibration.decide(scores).tolist() == [False, True, True, True, True]
    with pytest.raises(ValueError, match=r"threshold=nan is invalid; allowed: a finite number"):
        decide(scores, float("nan"))


def test_score_refuses_a_nan_threshold():
    args = argparse.Namespace(threshold=float("nan"), model="unused")
    with pytest.raises(ValueError, match=r"--threshold nan is invalid; allowed: a finite"):
        _threshold(args, model=None)


def test_a_model_with_nan_weights_is_refused_on_load(tmp_path):
    folder = vae.save(make_model(tiny_config(), seed=0), tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    name = sorted(state)[0]
    state[name] = state[name].clone().fill_(float("nan"))
    save_file(state, str(folder / "model.safetensors"), metadata={"format_version": "2"})
    with pytest.raises(ValueError, match=r"NaN or infinite weights in \['" + name.replace(".", r"\.")):
        vae.load(folder)


def test_a_config_file_without_its_config_section_is_named(tmp_path):
    folder = vae.save(make_model(tiny_config(), seed=0), tmp_path / "m")
    (folder / "config.json").write_text('{"format_version": 2}')
    with pytest.raises(ValueError, match=r"has no 'config' section \(keys: \['format_version'\]\)"):
        vae.load(folder)
    (folder / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON"):
        vae.load(folder)
