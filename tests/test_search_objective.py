"""``--objective`` refused before Ray starts when the data has no labelled defects to validate on
(real files; no Ray is started by these tests)."""

from __future__ import annotations

import shutil

import pytest

from search.cli import main as aitexvae
from tests.support.folder_fixture import PATCH, write_folder_set


@pytest.fixture
def unlabelled(tmp_path, monkeypatch):
    """A folder set with defect-free images only: nothing to validate real defects on."""
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "home"))
    folder = write_folder_set(tmp_path / "fabric")
    for extra in ("test", "ground_truth"):
        shutil.rmtree(folder.root / extra)
    return folder.root


@pytest.mark.parametrize("objective", ["real", "blend"])
def test_a_real_objective_without_labels_is_one_error_line_before_ray_starts(
        unlabelled, tmp_path, capsys, objective):
    code = aitexvae(["tune", "--data-root", str(unlabelled), "--format", "folder",
                     "--image-size", str(PATCH), "--objective", objective, "--no-tracking",
                     "--storage-path", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"--objective {objective} needs labelled defects" in err[0]
    assert "--objective synthetic" in err[0]
    assert not (tmp_path / "results").exists()  # nothing written: the name stays free

