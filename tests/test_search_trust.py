"""``--resume`` never unpickles a local experiment others could have written (issue 11 item 6).

A crafted experiment folder: Tune's ``tuner.pkl`` holds a payload that would create a marker
file if anything unpickled it.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest

from search.cli import main as aitexvae
from search.settings import SETTINGS_FILE, SearchSettings
from tests.support.hostile import CreatesFileWhenUnpickled


@pytest.fixture
def experiment(tmp_path):
    folder = tmp_path / "results" / "planted"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps(CreatesFileWhenUnpickled(str(tmp_path / "pwned"))))
    settings = SearchSettings(name="planted", storage_path=str(tmp_path / "results"))
    (folder / SETTINGS_FILE).write_text(json.dumps({"settings": settings.to_dict()}))
    for path in (folder, folder / "tuner.pkl", folder / SETTINGS_FILE):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return folder


@pytest.mark.parametrize("target", ["tuner.pkl", "."])
def test_resume_refuses_a_local_experiment_others_can_write(experiment, tmp_path, capsys,
                                                            target):
    path = experiment / target
    os.chmod(path, 0o777 if path.is_dir() else 0o666)
    code = aitexvae(["tune", "--resume", "planted", "--storage-path",
                     str(tmp_path / "results"), "--no-tracking"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "refusing to resume from" in err[0] and "writable by others (mode 0o" in err[0]
    assert "chmod -R go-w" in err[0]
    assert not (tmp_path / "pwned").exists()  # nothing was unpickled


def test_resume_refuses_a_pickled_searcher_state_before_ray_starts(experiment, tmp_path, capsys):
    # Owner-only files (the check above passes), Tune's snapshot present: a real resume, whose
    # searcher state is a pickle (as aitexvae wrote before its state was JSON, or an attacker).
    (experiment / "experiment_state-2026.json").write_text("{}")
    state = experiment / "searcher-state-2026.pkl"
    state.write_bytes(pickle.dumps(CreatesFileWhenUnpickled(str(tmp_path / "pwned"))))
    for path in (experiment / "experiment_state-2026.json", state):
        os.chmod(path, 0o600)
    code = aitexvae(["tune", "--resume", "planted", "--storage-path",
                     str(tmp_path / "results"), "--no-tracking"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"aitexvae tune: error: cannot resume: searcher state {state} is not the "
                      "JSON this version of aitexvae writes (UnicodeDecodeError); a pickle from "
                      "an older version is never loaded: start a new search with --name")
    assert not (tmp_path / "pwned").exists()
