"""An unwritable or full ``--storage-path`` is one error line before Ray starts (issue 11 item 5).

Real file systems: a read-only tmpfs and a 1 MiB tmpfs, mounted by the test (root, as in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray import tune

from search.cli import main as aitexvae


def _mount(path: Path, options: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); CI runs as root")


@pytest.fixture
def mounts(tmp_path):
    made = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        _mount(path, options)
        made.append(path)
        return path

    yield mount
    for path in made:
        subprocess.run(["umount", str(path)], check=False)


def _tune(storage: Path, capsys) -> tuple[int, list[str], float]:
    started = time.monotonic()
    code = aitexvae(["tune", "--image-size", "32", "--num-samples", "1", "--no-tracking",
                     "--storage-path", str(storage)])
    return code, capsys.readouterr().err.strip().splitlines(), time.monotonic() - started


def test_a_read_only_storage_path_is_refused_before_ray_starts(mounts, capsys, monkeypatch,
                                                               tmp_path):
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "home"))
    read_only = mounts("ro", "size=4m,ro")
    code, err, seconds = _tune(read_only / "results", capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"aitexvae tune: error: cannot write --storage-path {read_only / 'results'}: Read-only "
                      "file system; give a writable directory (or s3://, gs://)")
    assert seconds < 20  # no Ray was started


def test_a_full_storage_path_says_no_space_left(mounts, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "home"))
    tiny = mounts("tiny", "size=1m")
    code, err, _ = _tune(tiny, capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"aitexvae tune: error: no space left on --storage-path {tiny}: 1 MiB free")
    assert list(tiny.iterdir()) == []  # the probe file is gone, nothing else written
    # A file system with room on paper but none left: the probe write itself fails (ENOSPC).
    full = mounts("full", "size=80m")
    subprocess.run(["dd", "if=/dev/zero", f"of={full / 'filler'}", "bs=1M"], capture_output=True)
    code, err, _ = _tune(full / "results", capsys)
    assert code == 2 and err == [f"aitexvae tune: error: no space left on --storage-path {full / 'results'}"]


AITEXVAE = str(Path(sys.executable).with_name("aitexvae"))


def _runs(db: Path) -> dict[str, tuple[str, str]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {r.info.run_name: (r.info.status, r.data.tags.get("aitexvae.stop_reason", ""))
            for r in runs}


@pytest.mark.slow
def test_a_disk_that_fills_mid_search_is_named_recorded_and_resumable(mounts, tmp_path):
    """A real driver; the storage tmpfs is filled with dd once the first epoch is on it."""
    store, db = mounts("store", "size=80m"), tmp_path / "mlflow.db"
    env = {**os.environ, "AITEXVAE_HOME": str(tmp_path / "home"),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    tune = [AITEXVAE, "tune", "--storage-path", str(store), "--tracking-uri", f"sqlite:///{db}"]
    driver = subprocess.Popen(
        [*tune, "--name", "full", "--image-size", "32", "--num-samples", "2", "--max-epochs",
         "4", "--train-patches", "128", "--scheduler", "fifo", "--max-concurrent-trials", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not any(p.stat().st_size for p in store.glob("full/trial_*/result.json")):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
        time.sleep(0.2)
    subprocess.run(["dd", "if=/dev/zero", f"of={store / 'filler'}", "bs=1M"],
                   capture_output=True)
    _, err = driver.communicate(timeout=240)
    # One line names the cause and the way on (Tune's own sync warnings come before it).
    assert driver.returncode == 2, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"aitexvae tune: error: no space left on --storage-path {store}; the search stopped. "
        "Free space (or fix the permissions), then `aitexvae tune --resume full` continues it")
    runs = _runs(db)
    assert runs.pop("full") == ("FAILED", f"search ended FAILED: no space left on {store}/full; "
                                "free space or fix the permissions; no champion was "
                                "registered. `aitexvae tune --resume full` (with the same "
                                "--storage-path) continues it")
    assert runs and all(status == "FAILED" and reason == f"error: no space left on {store}/full"
                        for status, reason in runs.values()), runs
    from mlflow import MlflowClient
    assert MlflowClient(f"sqlite:///{db}").search_registered_models() == []
    # Space back: the resume runs the saved search (Tune's snapshot was truncated on the full
    # disk, so it starts over with the saved settings: 32 px, 4 epochs), and a champion comes.
    (store / "filler").unlink()
    done = subprocess.run([*tune, "--resume", "full"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Search finished: 2 trials — 2 ok" in done.stdout
    runs = _runs(db)
    assert runs.pop("full")[0] == "FINISHED"
    assert sorted(status for status, _ in runs.values()).count("FINISHED") == 2
    assert MlflowClient(f"sqlite:///{db}").get_model_version_by_alias("aitex-vae", "champion")


class FillDiskAtTheEnd(tune.Callback):
    """Fills the storage tmpfs once every trial is done, so Tune's last experiment snapshot
    meets a full disk while ``fit`` itself may still return normally."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def on_experiment_end(self, trials, **info) -> None:
        subprocess.run(["dd", "if=/dev/zero", f"of={self.store / 'filler'}", "bs=1M"],
                       capture_output=True)


@pytest.mark.slow
def test_a_disk_that_fills_as_the_search_ends_is_the_error_not_a_broken_snapshot(
        mounts, tmp_path, monkeypatch):
    from search import launcher
    from search.settings import SearchSettings

    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "home"))
    store = mounts("store", "size=80m")
    settings = SearchSettings(name="late", image_size=32, num_samples=1, max_epochs=1,
                              train_patches=64, scheduler="fifo", storage_path=str(store),
                              tracking=False, verbose=0)
    with pytest.raises(launcher.SearchError) as raised:
        launcher.search(settings, callbacks=[FillDiskAtTheEnd(store)])
    assert str(raised.value) == (
        f"no space left on --storage-path {store}; the search stopped. Free space (or fix the "
        "permissions), then `aitexvae tune --resume late` continues it")
