"""Objective fidelity on real fabric: which validation figure picks the model that finds real
defects (not a test).

One search on an AITEX-layout data set (FIFO, every epoch's checkpoint kept, no tracking), then
every trial's best checkpoint *by each objective* is scored on the search's own test split
(defect-free test strips and the defective strips not held out for real validation). With FIFO
and the random sampler the trials do not depend on the objective, so one search answers for all
three: ``synthetic`` (``val/auroc``), ``real`` (``val/real_auroc``) and ``blend`` (their mean).
(Under ASHA the objective would also decide which trials run on; that is not measured here.)

Prints per trial the synthetic and real validation figures and the test fabric-matched AUROC;
Spearman of each validation figure with the test figure over the trials; per objective the
champion's test figure ÷ the best trial's, and last ``ratio champion-vs-best-real: X`` for the
default objective (``search.objective.DEFAULT_WITH_LABELS``).

    .venv/bin/python bench/proxy_fidelity.py --data-root ../shared/data/aitex-dev
    .venv/bin/python bench/proxy_fidelity.py --num-samples 6 --max-epochs 3 --work /tmp/pf
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import vae  # noqa: E402
from search import launcher  # noqa: E402
from search.objective import DEFAULT_WITH_LABELS, OBJECTIVES, combine  # noqa: E402
from search.settings import SearchSettings  # noqa: E402
from vae import keys  # noqa: E402
from vae.score import score_patches  # noqa: E402
from vae.score.metrics import evaluate_scores  # noqa: E402


def _rows(result) -> list[dict]:
    frame = result.metrics_dataframe
    return [] if frame is None else frame.to_dict("records")


def _value(row: dict, objective: str) -> float:
    real = row.get(keys.VAL_REAL_AUROC, math.nan)
    return combine(objective, float(row[keys.VAL_AUROC]), float(real))


def _checkpoints(result) -> dict[int, str]:
    return {int(metrics[keys.EPOCH]): checkpoint.path
            for checkpoint, metrics in result.best_checkpoints}


def _spearman(a: list[float], b: list[float]) -> float:
    return float(spearmanr(a, b).statistic) if len(a) >= 3 else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/aitex-dev"))
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-defects", default="builtin", help="builtin or matched")
    parser.add_argument("--work", default=None, help="keep outputs here (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="aitexvae-fidelity-")).resolve()
    settings = SearchSettings(
        name="fidelity", data_root=str(Path(args.data_root).resolve()), data_format="aitex",
        image_size=args.image_size, num_samples=args.num_samples, max_epochs=args.max_epochs,
        seed=args.seed, val_defects=args.val_defects, scheduler="fifo", objective="synthetic",  # FIFO: ranking is post hoc
        keep_checkpoints=args.max_epochs, storage_path=str(work / "ray_results"),
        tracking=False, verbose=0)
    started = time.perf_counter()
    outcome = launcher.search(settings)
    search_s = time.perf_counter() - started
    splits = outcome.prepared.splits
    test, real_val = splits.test, splits.real_val
    print(f"search: {len(outcome.results)} trials x <= {args.max_epochs} epochs in "
          f"{search_s / 60:.1f} min; real validation {len(real_val)} patches "
          f"({int(real_val.labels.sum())} anomalous); test {len(test)} patches "
          f"({int(test.labels.sum())} anomalous)", flush=True)

    tested: dict[str, float] = {}  # checkpoint path -> test fabric-matched AUROC

    def test_auroc(path: str) -> float:
        if path not in tested:
            scores, _ = score_patches(vae.load(path), test.images, keep_maps=False)
            tested[path] = float(evaluate_scores(scores, test.labels, strips=test.strip)
                                 ["patch_auroc_fabric_matched"])
        return tested[path]

    trials = []  # (trial id, {objective: (best value, test figure)}, best synthetic, best real)
    for result in outcome.results:
        rows = [r for r in _rows(result) if r.get("nonfinite") == 0
                and math.isfinite(r.get(keys.VAL_AUROC, math.nan))]
        checkpoints = _checkpoints(result)
        if not rows or not checkpoints:
            continue
        picks = {}
        for objective in OBJECTIVES:
            best = max((r for r in rows if int(r[keys.EPOCH]) in checkpoints),
                       key=lambda r, o=objective: _value(r, o))
            picks[objective] = (_value(best, objective),
                                test_auroc(checkpoints[int(best[keys.EPOCH])]))
        trials.append((str(result.metrics.get("trial_id")), picks,
                       max(r[keys.VAL_AUROC] for r in rows),
                       max(r.get(keys.VAL_REAL_AUROC, math.nan) for r in rows)))
        print(f"  scored trial {trials[-1][0]} ({len(tested)} checkpoints so far)", flush=True)

    print(f"\n{'trial':<10}{'val/auroc':>10}{'val/real':>10}   test fabric-matched by "
          + ", ".join(OBJECTIVES))
    for trial_id, picks, synthetic, real in trials:
        print(f"{trial_id:<10}{synthetic:>10.4f}{real:>10.4f}   "
              + ", ".join(f"{picks[o][1]:.4f}" for o in OBJECTIVES))
    synthetic_best = [t[2] for t in trials]
    real_best = [t[3] for t in trials]
    test_by = {o: [t[1][o][1] for t in trials] for o in OBJECTIVES}
    print(f"\nSpearman over {len(trials)} trials:")
    print(f"  val/auroc vs val/real_auroc (the fidelity a search reports): "
          f"{_spearman(synthetic_best, real_best):+.2f}")
    for objective in OBJECTIVES:
        values = [t[1][objective][0] for t in trials]
        print(f"  {objective:<9} objective vs test fabric-matched: "
              f"{_spearman(values, test_by[objective]):+.2f}")
    ratios = {}
    for objective in OBJECTIVES:
        champion = max(trials, key=lambda t, o=objective: t[1][o][0])
        best_test = max(test_by[objective])
        ratios[objective] = champion[1][objective][1] / best_test
        print(f"ratio champion-vs-best-real[{objective}]: {ratios[objective]:.4f} (champion "
              f"{champion[0]} test {champion[1][objective][1]:.4f}, best trial {best_test:.4f})")
    print(f"outputs in {work}")
    print(f"ratio champion-vs-best-real: {ratios[DEFAULT_WITH_LABELS]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
