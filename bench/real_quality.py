"""Detection quality on real fabric, through the service end to end (not a test).

Runs ``aitexvae tune`` on an AITEX-layout data set, pulls the champion with ``aitexvae pull``,
and scores the search's own held-out test split (the defect-free test strips and every defective
strip, as ``vae.data.splits`` assigns them) with ``aitexvae score``. Prints the training-free
floor beside it (a Gaussian blur as the "reconstruction", shared/notes/detection-levers.md), the
per-fabric table, the DRA-protocol AUROC (anomalous patches vs patches of defect-free strips) and
the fabric-matched AUROC (anomalous patches vs the clean patches of the same defective strips),
for the champion as pulled (``aitexvae score`` without flags: the scorer its trial chose,
``score.reference`` included) and, side by side on the same champion, with each other
``--reference`` (``vae.config.REFERENCES``: each patch on its own, or against the other
patches of its strip: format 6's ``strip_fabric``, 5's ``strip_peak`` and 4's ``strip``;
about 40 s and 2 min each on 2 cores). Ends with
``ratio fabric-matched-auroc: X`` for the champion as pulled. ``--work DIR`` keeps the outputs;
run again with the same DIR and a champion already pulled there, it only scores.

    .venv/bin/python bench/real_quality.py --data-root ../shared/data/aitex-dev
    .venv/bin/python bench/real_quality.py --space my_space.yaml --num-samples 4 --max-epochs 6

Defaults are sized to finish within about 45 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vae.config import REFERENCES  # noqa: E402
from vae.data import DataConfig, load_catalog  # noqa: E402
from vae.data.splits import assign_strips  # noqa: E402
from vae.score.blur import gaussian_blur  # noqa: E402
from vae.score.metrics import evaluate_scores  # noqa: E402

CLI = [sys.executable, "-m", "search.cli"]
FLOOR_SIGMA = 12.0  # blur "reconstruction"; the floor is flat for sigma 8-16 (notes)


def _run(command: list[str], log: Path) -> float:
    start = time.perf_counter()
    print("$", " ".join(command), flush=True)
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0:
        print(log.read_text()[-4000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")
    return time.perf_counter() - start


def test_split(root: Path, image_size: int, seed: int):
    """The catalog's test patches and their strip files, as the search split them."""
    config = DataConfig(format="aitex", root=str(root), patch_size=image_size, seed=seed)
    catalog, _ = load_catalog(config)
    roles = assign_strips(catalog, config)
    test = catalog.subset(np.isin(catalog.strip_index, roles["test"]))
    return test, [catalog.strips[i] for i in roles["test"]]


def link_test_set(root: Path, strips, folder: Path) -> Path:
    """An AITEX-layout folder of symbolic links to the test strips (and their masks)."""
    for info in strips:
        for relative in (info.file, *info.mask_files):
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():  # a reused --work folder has them already
                target.symlink_to(root / relative)
    for name in ("Defect_images", "Mask_images", "NODefect_images"):
        (folder / name).mkdir(exist_ok=True)
    return folder


def dra_auroc(scores: np.ndarray, labels: np.ndarray, strips: np.ndarray) -> float:
    """DRA protocol: anomalous patches vs the patches of defect-free strips (clean patches of
    defective strips are left out)."""
    defective = np.isin(strips, np.unique(strips[labels == 1]))
    keep = (labels == 1) | ~defective
    return float(roc_auc_score(labels[keep], scores[keep]))


def floor(test) -> tuple[float, float]:
    """The training-free floor on the same patches: blur as reconstruction, l2_smooth, max."""
    x = torch.from_numpy(test.images[:, 0].astype(np.float32) / 255.0)
    maps = gaussian_blur((x - gaussian_blur(x, FLOOR_SIGMA)).square(), 2.0)
    scores = maps.flatten(1).amax(1).numpy()
    metrics = evaluate_scores(scores, test.labels, strips=test.strip)
    return metrics["patch_auroc_fabric_matched"], dra_auroc(scores, test.labels, test.strip)


def read_scores(score_dir: Path, test) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows = list(csv.DictReader((score_dir / "scores.csv").open()))
    scores = np.array([float(r["score"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    files = np.array([r["file"] for r in rows])
    fabrics = np.array([r["fabric"] for r in rows])
    return scores, labels, files, fabrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/aitex-dev"))
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--space", default=None, help="a --space file for aitexvae tune")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further aitexvae tune flags")
    parser.add_argument("--work", default=None, help="keep outputs here (default: a temp dir)")
    args = parser.parse_args()
    root = Path(args.data_root).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="aitexvae-real-quality-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{work / 'mlflow.db'}"

    test, strips = test_split(root, args.image_size, args.seed)
    floor_fm, floor_dra = floor(test)
    print(f"test split: {len(strips)} strips, {len(test)} patches, "
          f"{int(test.labels.sum())} anomalous", flush=True)

    tune = [*CLI, "tune", "--data-root", str(root), "--format", "aitex", "--name", "bench",
            "--image-size", str(args.image_size), "--num-samples", str(args.num_samples),
            "--max-epochs", str(args.max_epochs), "--seed", str(args.seed),
            "--storage-path", str(work / "ray_results"), "--tracking-uri", store,
            *(["--space", args.space] if args.space else []), *args.extra]
    if (work / "champion" / "config.json").is_file():
        tune_s = 0.0
        print(f"reusing the champion in {work / 'champion'} (no search: --num-samples, "
              "--space and --extra do not apply)")
    else:
        tune_s = _run(tune, work / "tune.log")
        print((work / "tune.log").read_text().split("Search finished")[-1][:3000])
        _run([*CLI, "pull", "--tracking-uri", store, "--out", str(work / "champion")],
             work / "pull.log")
    test_root = link_test_set(root, strips, work / "test_set")
    config = json.loads((work / "champion" / "config.json").read_text())["config"]
    print(f"\nchampion: {json.dumps({k: config[k] for k in ('model', 'score')})}")
    print(f"search {tune_s / 60:.1f} min; outputs in {work}")
    print(f"floor (blur sigma {FLOOR_SIGMA:g}, no training): fabric-matched {floor_fm:.4f}, "
          f"DRA {floor_dra:.4f}")
    own = config["score"].get("reference", "none")
    figures = {}
    for reference in (own, *(r for r in REFERENCES if r != own)):
        out = work / f"score-{reference}"
        flags = [] if reference == own else ["--reference", reference]
        seconds = _run([*CLI, "score", "--model", str(work / "champion"), "--data-root",
                        str(test_root), "--format", "aitex", "--out", str(out), *flags],
                       work / f"score-{reference}.log")
        name = f"as pulled ({reference})" if reference == own else f"--reference {reference}"
        figures[reference] = report(out, test, name, seconds)
    print(f"ratio fabric-matched-auroc: {figures[own]:.4f}")
    return 0


def report(out: Path, test, name: str, seconds: float) -> float:
    """Print one scoring's figures; returns its fabric-matched AUROC."""
    metrics = json.loads((out / "metrics.json").read_text())
    scores, labels, files, _ = read_scores(out, test)
    strip_ids = np.array([Path(f).with_suffix("").as_posix() for f in files])
    per_fabric = ", ".join(
        f"{fabric} {values.get('patch_auroc_fabric_matched', float('nan')):.2f} "
        f"({values['n_anomalous']})"
        for fabric, values in sorted(metrics.get("per_fabric", {}).items())
        if values.get("n_anomalous", 0))
    figure = float(metrics["patch_auroc_fabric_matched"])
    print(f"{name:22s} fabric-matched {figure:.4f}  DRA "
          f"{dra_auroc(scores, labels, strip_ids):.4f}  scoring {seconds:.0f} s  "
          f"(per fabric, anomalous patches: {per_fabric})", flush=True)
    return figure


if __name__ == "__main__":
    raise SystemExit(main())
