"""vae.checkpoint: what a trial checkpoint holds, reading it back, pruning, and no unpickling."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow.fs
import pytest
import torch

from tests.support.checkpoints import make_model, tiny_config, validation_set
from tests.support.hostile import CreatesFileWhenUnpickled
from vae import checkpoint
from vae.io import CONFIG_FILE, WEIGHTS_FILE
from vae.train import make_optimizer, train_epoch


def _trained(config):
    model = make_model(config, seed=0)
    optimizer = make_optimizer(model, config.train)
    images, _ = validation_set()
    train_epoch(model, optimizer, images, config, torch.device("cpu"))
    return model, optimizer


def test_a_checkpoint_round_trips_model_optimizer_epoch_and_scores(tmp_path):
    config = tiny_config(**{"train.batch_size": 4})
    model, optimizer = _trained(config)
    scores, real = np.arange(12, dtype=np.float64), np.ones(3)
    folder = checkpoint.write(tmp_path / "ckpt", model, optimizer, 4, {"val/auroc": 0.75},
                              scores, real)
    assert {p.name for p in folder.iterdir()} == {
        WEIGHTS_FILE, CONFIG_FILE, checkpoint.OPTIMIZER_FILE, checkpoint.STATE_FILE,
        checkpoint.SCORES_FILE, checkpoint.REAL_SCORES_FILE}
    assert np.load(folder / checkpoint.SCORES_FILE).dtype == np.float32
    assert checkpoint.read_state(folder) == {"epoch": 4, "metrics": {"val/auroc": 0.75}}
    restored = checkpoint.read(folder)
    assert restored.epoch == 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor), name
    again = make_optimizer(restored.model, config.train)
    again.load_state_dict(restored.optimizer_state)
    for ours, theirs in zip(again.state.values(), optimizer.state.values(), strict=True):
        assert torch.equal(ours["exp_avg_sq"], theirs["exp_avg_sq"])
        assert int(ours["step"]) == int(theirs["step"]) == 3  # 12 patches / batch 4


def test_pruning_leaves_exactly_what_pull_needs(tmp_path):
    config = tiny_config()
    model, optimizer = _trained(config)
    folder = checkpoint.write(tmp_path / "ckpt", model, optimizer, 1, {}, np.zeros(12))
    local = pyarrow.fs.LocalFileSystem()
    assert checkpoint.prune(local, str(folder)) is True
    assert checkpoint.prune(local, str(folder)) is False  # already pruned: not an error
    assert checkpoint.prune(local, str(tmp_path / "deleted-by-tune")) is False
    assert set(checkpoint.PULL_FILES) <= {p.name for p in folder.iterdir()}
    assert not (folder / checkpoint.OPTIMIZER_FILE).exists()
    assert checkpoint.read(folder).optimizer_state is None  # a model, but not resumable


def test_an_optimizer_state_that_is_a_pickle_payload_is_refused_unexecuted(tmp_path):
    config = tiny_config()
    model, optimizer = _trained(config)
    folder = checkpoint.write(tmp_path / "ckpt", model, optimizer, 1, {}, np.zeros(12))
    marker = tmp_path / "executed"
    (folder / checkpoint.OPTIMIZER_FILE).write_bytes(
        pickle.dumps({"state": CreatesFileWhenUnpickled(str(marker))}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        checkpoint.read(folder)
    assert not marker.exists()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"metrics": {}}), "[]"])
def test_a_broken_state_file_is_named_with_what_was_expected(tmp_path, content):
    (tmp_path / checkpoint.STATE_FILE).write_text(content)
    with pytest.raises(ValueError, match=r"state.json is not a checkpoint state file .*"
                                         r"\"epoch\": N"):
        checkpoint.read_state(tmp_path)


def test_the_trainable_resumes_from_a_latest_checkpoint_and_restarts_from_a_pruned_one(
        tmp_path, caplog):
    from search.trainable import _restore

    config = tiny_config(**{"train.batch_size": 4})
    model, optimizer = _trained(config)
    folder = checkpoint.write(tmp_path / "ckpt", model, optimizer, 2, {}, np.zeros(12))
    resumed, resumed_optimizer, epoch = _restore(folder, config, torch.device("cpu"))
    assert epoch == 2 and int(next(iter(resumed_optimizer.state.values()))["step"]) == 3
    with pytest.raises(RuntimeError, match="holds a different config than this trial"):
        _restore(folder, tiny_config(**{"model.latent_dim": 7}), torch.device("cpu"))
    checkpoint.prune(pyarrow.fs.LocalFileSystem(), str(folder))
    with caplog.at_level("WARNING", logger="search.trainable"):
        assert _restore(folder, config, torch.device("cpu")) is None
    assert "no optimizer state; restarting the trial from epoch 0" in caplog.text


def test_adam_state_is_pruned_once_the_resume_window_has_moved_past_a_checkpoint(tmp_path):
    from ray import tune

    from search.trainable import OptimizerStateWindow

    config = tiny_config()
    model, optimizer = _trained(config)
    window = OptimizerStateWindow(3)  # --keep-checkpoints 2: the driver may lag by 2
    folders = []
    for epoch in range(1, 6):
        folders.append(checkpoint.write(tmp_path / f"e{epoch}", model, optimizer, epoch, {},
                                        np.zeros(12)))
        window.persisted(tune.Checkpoint.from_directory(str(folders[-1])))
    window.persisted(None)  # no checkpoint (a non-finite report): nothing moves
    has_state = [(f / checkpoint.OPTIMIZER_FILE).is_file() for f in folders]
    assert has_state == [False, False, True, True, True]
    assert all((f / checkpoint.SCORES_FILE).is_file() for f in folders)
