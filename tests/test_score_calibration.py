"""Calibration: statistics and threshold from normal scores, JSON round trip, decisions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vae.score import CALIBRATION_FILE, Calibration


def test_fit_statistics_and_threshold():
    scores = np.arange(1, 1001, dtype=np.float64)  # 1..1000
    cal = Calibration.fit(scores, quantile=0.99)
    assert cal.n == 1000 and cal.mean == pytest.approx(500.5)
    assert cal.std == pytest.approx(scores.std())
    assert cal.threshold == pytest.approx(np.quantile(scores, 0.99)) == pytest.approx(990.01)
    assert cal.quantiles["0.5"] == pytest.approx(500.5)
    assert set(cal.quantiles) == {"0.5", "0.9", "0.95", "0.99", "0.999"}
    # about 1 % of the normal scores are rejected: the false-alarm rate the quantile chose
    assert cal.decide(scores).sum() == 10


def test_decide_flags_scores_above_the_threshold():
    cal = Calibration.fit([1.0, 2.0, 3.0], quantile=0.5)
    assert cal.threshold == 2.0
    np.testing.assert_array_equal(cal.decide(np.array([1.9, 2.0, 2.1])), [False, False, True])


def test_json_round_trip(tmp_path):
    cal = Calibration.fit(np.random.default_rng(0).random(500), quantile=0.95)
    path = cal.to_json(tmp_path / "model" / CALIBRATION_FILE)
    assert Calibration.from_json(path) == cal
    assert json.loads(path.read_text())["threshold"] == cal.threshold


@pytest.mark.parametrize(("scores", "quantile", "message"), [
    ([], 0.99, "zero normal scores"),
    ([1.0, float("nan")], 0.99, "NaN or infinite"),
    ([1.0, 2.0], 1.0, r"quantile=1.0 is out of range; allowed \(0, 1\)"),
])
def test_fit_rejects_bad_input(scores, quantile, message):
    with pytest.raises(ValueError, match=message):
        Calibration.fit(scores, quantile=quantile)


def test_from_json_rejects_bad_files(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read calibration file"):
        Calibration.from_json(tmp_path / "broken.json")
    (tmp_path / "keys.json").write_text(json.dumps({"threshold": 1.0, "colour": "red"}))
    with pytest.raises(ValueError, match="expected"):
        Calibration.from_json(tmp_path / "keys.json")
    with pytest.raises(ValueError, match="cannot read"):
        Calibration.from_json(tmp_path / "missing.json")
