"""`aitexvae data check` (table and JSON) and `aitexvae data synth`, through the real entry point."""

import json
from pathlib import Path

import pytest

from search.cli import main
from tests.support.aitex_fixture import write_aitex_fixture

SUMMARY_KEYS = {"format", "root", "patch_size", "stride", "resize", "strips", "fabrics", "patches",
                "splits", "skipped", "notes", "cache"}


@pytest.fixture
def aitex(tmp_path) -> Path:
    return write_aitex_fixture(tmp_path / "aitex")


def _check(args, capsys, tmp_path):
    code = main(["data", "check", *args, "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_json_has_the_documented_keys_and_values(aitex, capsys, tmp_path):
    code, out, _ = _check(["--data-root", str(aitex), "--patch-size", "32", "--json"], capsys,
                          tmp_path)
    assert code == 0
    report = json.loads(out)
    assert set(report) == SUMMARY_KEYS
    assert report["strips"] == {"normal": 17, "defective": 5}
    assert report["patches"] == {"total": 176, "anomalous": 7}
    assert set(report["splits"]) == {"train", "val", "real_val", "test"}
    assert report["splits"]["val"] == {"strips": 2, "patches": 32, "anomalous": 16,
                                       "synthetic": 16}
    assert len(report["skipped"]) == 8 and set(report["skipped"][0]) == {"file", "reason", "kind"}
    assert set(report["notes"][0]) == {"file", "note", "kind"}
    assert report["cache"]["hit"] is False


def test_check_table_lists_fabrics_splits_and_skipped_files(aitex, capsys, tmp_path):
    _check(["--data-root", str(aitex), "--patch-size", "32"], capsys, tmp_path)
    code, out, _ = _check(["--data-root", str(aitex), "--patch-size", "32"], capsys, tmp_path)
    assert code == 0
    assert "strips    normal 17, defective 5" in out
    assert "patches   176 (7 anomalous)" in out
    lines = out.splitlines()
    assert any(line.split() == ["01", "9", "1"] for line in lines)
    assert any(line.split() == ["train", "11", "88", "0", "0"] for line in lines)
    assert "  1 x empty file (0 bytes)" in lines  # one line per kind, then its files
    assert "      Defect_images/0107_030_00.png: empty file (0 bytes)" in lines
    assert "cache     hit: " in out


@pytest.mark.parametrize(("args", "message"), [
    (["--data-root", "/does/not/exist"], "error: data root '/does/not/exist' does not exist"),
    (["--data-root", ".", "--format", "folder"], "has no train/good folder"),
    (["--patch-size", "512"], "does not fit the small synthetic set"),
])
def test_bad_input_is_one_error_line_and_exit_2(args, message, capsys, tmp_path):
    code, out, err = _check(args, capsys, tmp_path)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err.splitlines()[0]
    assert "Traceback" not in err


def test_synth_writes_a_set_that_check_reads(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "set"), "--seed", "4"]) == 0
    assert "wrote a small synthetic" in capsys.readouterr().out
    assert main(["data", "synth", "--out", str(tmp_path / "set")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    code, out, _ = _check(["--data-root", str(tmp_path / "set"), "--patch-size", "64", "--json"],
                          capsys, tmp_path)
    assert code == 0 and json.loads(out)["strips"] == {"normal": 40, "defective": 16}


def test_check_on_the_output_of_synth_says_which_patch_size_fits_it(capsys, tmp_path):
    assert main(["data", "synth", "--out", str(tmp_path / "set")]) == 0
    capsys.readouterr()
    code, _, err = _check(["--data-root", str(tmp_path / "set")], capsys, tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "56 x smaller than one patch" in err and "--patch-size 64" in err
    code, out, _ = _check(["--data-root", str(tmp_path / "set"), "--patch-size", "64"], capsys,
                          tmp_path)
    assert code == 0 and "strips    normal 40, defective 16" in out
