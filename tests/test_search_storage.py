"""An unwritable or full ``--storage-path`` is one error line before Ray starts (issue 11 item 5).

Real file systems: a read-only tmpfs and a 1 MiB tmpfs, mounted by the test (root, as in CI).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

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
