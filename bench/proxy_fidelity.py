"""Objective fidelity on real fabric: which validation figure picks the model that finds real
defects (not a test).

One search on an AITEX-layout data set (FIFO, every epoch's checkpoint kept, no tracking); then,
for each objective — ``synthetic`` (``val/auroc``), ``real`` (``val/real_auroc``), ``blend``
(their mean) — every trial's best epoch *and scorer* by that objective is scored on the search's
own test split (defect-free test strips and the defective strips not held out for real
validation). With FIFO and the random sampler the trials do not depend on the objective, and
every epoch reports every scorer's synthetic and real AUROC (``val/*_by_scorer/<name>``), so one
search gives exactly what each objective would have chosen. (Under ASHA the objective would also
decide which trials run on; that is not measured here.)

Prints per trial the synthetic and real validation figures and the test fabric-matched AUROC of
each objective's pick; Spearman of each objective with the test figure over the trials; per
objective ``ratio champion-vs-best-real[<objective>]`` = the champion's test figure ÷ the best
trial's; and last ``ratio champion-vs-best-real: X`` for the default objective
(``search.objective.DEFAULT_WITH_LABELS``).

    .venv/bin/python bench/proxy_fidelity.py --data-root ../shared/data/aitex-dev
    .venv/bin/python bench/proxy_fidelity.py --num-samples 6 --max-epochs 3 --work /tmp/pf
    .venv/bin/python bench/proxy_fidelity.py --experiment /tmp/pf/ray_results/fidelity  # re-analyse
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from ray import tune
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import vae  # noqa: E402
from search import launcher  # noqa: E402
from search.objective import DEFAULT_WITH_LABELS, OBJECTIVES, combine  # noqa: E402
from search.settings import SearchSettings  # noqa: E402
from search.trainable import train_vae  # noqa: E402
from vae import keys  # noqa: E402
from vae.data import load_splits  # noqa: E402
from vae.score.metrics import evaluate_scores  # noqa: E402
from vae.score.reference import StripLayout  # noqa: E402
from vae.score.scorers import NAMES, candidates, pick_best, score_candidates  # noqa: E402


def _rows(result) -> list[dict]:
    frame = result.metrics_dataframe
    return [] if frame is None else frame.to_dict("records")


def _pick(row: dict, objective: str) -> tuple[float, str]:
    """``(value, scorer)``: the scorer this objective prefers at this epoch, as validate does."""
    values = {name: combine(objective, float(row.get(f"{keys.VAL_AUROC_BY_SCORER}/{name}",
                                                     math.nan)),
                            float(row.get(f"{keys.VAL_REAL_AUROC_BY_SCORER}/{name}", math.nan)))
              for name in NAMES}
    best = pick_best(values)
    return values[best], best


def _checkpoints(result) -> dict[int, str]:
    return {int(metrics[keys.EPOCH]): checkpoint.path
            for checkpoint, metrics in result.best_checkpoints}


def _spearman(a: list[float], b: list[float]) -> float:
    return float(spearmanr(a, b).statistic) if len(a) >= 3 else math.nan


class TestScores:
    """Test fabric-matched AUROC of (checkpoint, scorer): the scorer's maps only."""

    def __init__(self, test) -> None:
        self.test, self.cache = test, {}

    def __call__(self, path: str, scorer: str) -> float:
        if (path, scorer) not in self.cache:
            model = vae.load(path)
            config = candidates(replace(model.config.score, select="best"))[scorer]
            layout = StripLayout(self.test.strip_index, np.stack([self.test.x, self.test.y], 1))
            scores = score_candidates(model, self.test.images, {scorer: config},
                                      layout=layout)[scorer]
            self.cache[path, scorer] = float(evaluate_scores(
                scores, self.test.labels, strips=self.test.strip)["patch_auroc_fabric_matched"])
        return self.cache[path, scorer]


def analyse(results, splits, objectives=OBJECTIVES) -> dict[str, float]:
    test = TestScores(splits.test)
    trials = []  # (trial id, {objective: (value, test figure, epoch, scorer)})
    for result in results:
        rows = [r for r in _rows(result) if r.get("nonfinite") == 0]
        checkpoints = _checkpoints(result)
        rows = [r for r in rows if int(r[keys.EPOCH]) in checkpoints]
        if not rows:
            continue
        picks = {}
        for objective in objectives:
            value, row, scorer = _best(rows, objective)
            epoch = int(row[keys.EPOCH])
            picks[objective] = (value, test(checkpoints[epoch], scorer), epoch, scorer)
        trials.append((str(result.metrics.get("trial_id")), picks))
        print(f"  scored trial {trials[-1][0]}", flush=True)
    print(f"\n{'trial':<10}" + "".join(f"{o + ' val':>16}{'test':>8}{'ep':>4}"
                                         for o in objectives))
    for trial_id, picks in trials:
        print(f"{trial_id:<10}" + "".join(
            f"{picks[o][0]:>16.4f}{picks[o][1]:>8.4f}{picks[o][2]:>4}" for o in objectives))
    print(f"\nSpearman over {len(trials)} trials:")
    print(f"  best val/auroc vs best val/real_auroc (the fidelity a search reports): "
          f"{_fidelity(results):+.2f}")
    ratios = {}
    for objective in objectives:
        values = [p[objective][0] for _, p in trials]
        tests = [p[objective][1] for _, p in trials]
        champion = max(trials, key=lambda t, o=objective: t[1][o][0])
        ratios[objective] = champion[1][objective][1] / max(tests)
        print(f"  {objective:<9} objective vs its picks' test fabric-matched AUROC: "
              f"{_spearman(values, tests):+.2f}")
        print(f"ratio champion-vs-best-real[{objective}]: {ratios[objective]:.4f} (champion "
              f"{champion[0]}, scorer {champion[1][objective][3]}, epoch "
              f"{champion[1][objective][2]}: test {champion[1][objective][1]:.4f}; best trial "
              f"{max(tests):.4f})")
    return ratios


def _fidelity(results) -> float:
    """Spearman of each trial's best val/auroc and best val/real_auroc, as search.fidelity."""
    pairs = []
    for result in results:
        rows = [r for r in _rows(result) if r.get("nonfinite") == 0]
        if rows:
            pairs.append((max(r[keys.VAL_AUROC] for r in rows),
                          max(r.get(keys.VAL_REAL_AUROC, math.nan) for r in rows)))
    return _spearman([p[0] for p in pairs], [p[1] for p in pairs])


def _best(rows: list[dict], objective: str) -> tuple[float, dict, str]:
    scored = [(*_pick(r, objective), r) for r in rows]
    value, scorer, row = max(scored, key=lambda t: t[0])
    return value, row, scorer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/aitex-dev"))
    parser.add_argument("--num-samples", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-defects", default="builtin", help="builtin or matched")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES),
                        choices=OBJECTIVES, help="the objectives to score on test (default all)")
    parser.add_argument("--experiment", default=None,
                        help="analyse this finished search instead of running one")
    parser.add_argument("--work", default=None, help="keep outputs here (default: a temp dir)")
    args = parser.parse_args()
    settings = SearchSettings(
        name="fidelity", data_root=str(Path(args.data_root).resolve()), data_format="aitex",
        image_size=args.image_size, num_samples=args.num_samples, max_epochs=args.max_epochs,
        seed=args.seed, val_defects=args.val_defects, scheduler="fifo",
        objective="synthetic",  # FIFO + random: the trials do not depend on it; ranking is post hoc
        keep_checkpoints=args.max_epochs, tracking=False, verbose=0,
        storage_path=str(Path(args.work or tempfile.mkdtemp(prefix="aitexvae-fidelity-"))
                         / "ray_results"))
    splits = load_splits(settings.data_config())
    if args.experiment:
        results = tune.Tuner.restore(args.experiment, train_vae).get_results()
        print(f"analysing {args.experiment}")
    else:
        started = time.perf_counter()
        results = launcher.search(settings).results
        print(f"search: {len(results)} trials x <= {args.max_epochs} epochs in "
              f"{(time.perf_counter() - started) / 60:.1f} min ({settings.storage_path})")
    real = splits.real_val
    print(f"real validation {len(real)} patches ({int(real.labels.sum())} anomalous); test "
          f"{len(splits.test)} patches ({int(splits.test.labels.sum())} anomalous); validation "
          f"defects {args.val_defects}", flush=True)
    ratios = analyse(results, splits, args.objectives)
    default = DEFAULT_WITH_LABELS if DEFAULT_WITH_LABELS in ratios else args.objectives[0]
    print(f"ratio champion-vs-best-real: {ratios[default]:.4f} ({default})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
