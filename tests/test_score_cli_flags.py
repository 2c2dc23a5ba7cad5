"""`aitexvae score` reads `--tracking-uri` for models:/ URIs, as the README says."""

from __future__ import annotations

import subprocess
import sys


def test_score_passes_its_tracking_uri_to_the_model_loader(tmp_path):
    store = tmp_path / "elsewhere.db"
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", "score", "--model", "models:/aitex-vae@champion",
         "--tracking-uri", f"sqlite:///{store}", "--images", str(tmp_path / "x.png"),
         "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert f"no MLflow database at {store}" in done.stderr  # the given store, not ./mlflow.db
    assert not store.exists() and not (tmp_path / "out").exists()


def test_pulled_models_are_cached_under_aitexvae_home(tmp_path, monkeypatch):
    from tracking.pull import cache_dir

    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "home"))
    folder = cache_dir("models:/aitex-vae@champion", "sqlite:///x.db")
    assert folder.parent == tmp_path / "home" / "models"
    assert folder != cache_dir("models:/aitex-vae@champion", "sqlite:///y.db")
