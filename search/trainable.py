"""The Ray Tune trainable: one VAE trial, epoch by epoch. The only caller of ``tune.report`` and
``tune.get_checkpoint``.

Each epoch reports the training terms, ``val/loss``, ``val/mse``, ``val/kl`` (held-out normal
patches), ``val/auroc`` (patch-level AUROC of ``vae.score`` scores: held-out normal patches vs
the same patches with synthetic defects — comparable across loss mixes, unlike any loss),
``val/real_auroc`` when the data has labelled defects (held-out real defects vs the clean patches
of their strips), ``val/objective`` (what ranks trials, ``search.objective``), images/s and epoch
time, with a checkpoint: ``vae.save`` output, the optimizer state, ``state.json`` (epoch,
metrics), ``val_scores.npy`` and ``real_val_scores.npy`` (the per-patch scores behind the two
AUROCs); ``vae.checkpoint`` owns that format. Only a trial's last few checkpoints keep the
optimizer state (``OptimizerStateWindow``), so an older kept best checkpoint holds only what
``pull`` needs.

A non-finite loss or metric is reported once with ``nonfinite = 1`` and ``val/auroc = NaN`` (no
checkpoint), and the trial returns: it ends TERMINATED, so Tune does not retry it, ASHA's NaN
comparisons never matter, and ``search.report`` excludes it from the ranking.
"""

from __future__ import annotations

import collections
import logging
import math
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from search.keys import NONFINITE, RESUMED_FROM
from search.objective import combine, figures
from vae import checkpoint as trial_checkpoint
from vae import keys
from vae.config import ScoreConfig, VAEConfig
from vae.model import build_model
from vae.resources import ResourceMeter
from vae.score import image_auroc
from vae.score.reference import StripLayout
from vae.score.scorers import NAMES, candidates, pick_best, score_candidates
from vae.train import NonFiniteLossError, make_optimizer, place_images, prepare_model, train_epoch
from vae.validation import validation_pass

log = logging.getLogger(__name__)
BY_SCORER = (keys.VAL_AUROC_BY_SCORER, keys.VAL_REAL_AUROC_BY_SCORER)
# The share of a trial's GPU memory its uint8 patches may take when placed on the device; the
# rest is for activations, weights and Adam's state.
DATA_SHARE_OF_DEVICE = 0.25


@dataclass(frozen=True)
class TrialData:
    """What every trial reads; put once in Ray's object store by ``tune.with_parameters``."""

    train_images: np.ndarray  # uint8 (N, C, P, P), defect-free
    val_images: np.ndarray  # uint8 (M, C, P, P): held-out normal + the same with defects
    val_labels: np.ndarray  # int (M,), 1 = synthetic defect
    objective: str = "synthetic"  # resolved (search.objective.resolve)
    real_images: np.ndarray | None = None  # uint8 (R, C, P, P): held-out defective strips
    real_labels: np.ndarray | None = None  # int (R,), 1 = a real defect pixel in the patch
    resume_window: int = 3  # checkpoints that keep Adam's state: --keep-checkpoints + 1
    # Where the validation patches lie in their strips, for the strip-reference scorer; the
    # synthetic-defect copies are left out of the reference bank (they duplicate clean patches).
    val_layout: StripLayout | None = None
    real_layout: StripLayout | None = None

    @classmethod
    def from_splits(cls, splits: Any, train_patches: int = 0, seed: int = 0,
                    objective: str = "synthetic") -> TrialData:
        """``train_patches`` > 0 keeps a seeded random subset of that many training patches."""
        train = splits.train.images
        if 0 < train_patches < len(train):
            keep = np.sort(np.random.default_rng(seed).choice(len(train), train_patches,
                                                              replace=False))
            train = train[keep]
        real = splits.real_val if splits.has_real_val else None
        return cls(train, splits.val.images, np.asarray(splits.val.labels), objective,
                   None if real is None else real.images,
                   None if real is None else np.asarray(real.labels),
                   val_layout=_layout(splits.val, bank=~np.asarray(splits.val.synthetic)),
                   real_layout=None if real is None else _layout(real))

    def tensors(self, device: torch.device | None = None, budget_bytes: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, np.ndarray] | None]:
        """(train, val, (real val, its labels) or None) as uint8 tensors: on a CPU sharing the
        object store's memory, on a GPU placed there once when they fit ``budget_bytes``
        (``vae.train.place_images``).

        Arrays from the object store are read-only; nothing here writes to them, so torch's
        warning about non-writable arrays is silenced instead of copying the data per trial.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            train, val = torch.as_tensor(self.train_images), torch.as_tensor(self.val_images)
            real = None if self.real_images is None else \
                (torch.as_tensor(self.real_images), self.real_labels)
        device = device or torch.device("cpu")
        placed = []
        for images in (train, val, None if real is None else real[0]):
            if images is not None:  # training patches first: every step reads them
                placed.append(place_images(images, device, budget_bytes))
                budget_bytes -= images.numel() if placed[-1].device.type == device.type else 0
        train, val = placed[:2]
        return train, val, None if real is None else (placed[2], real[1])


def _layout(patches: Any, bank: np.ndarray | None = None) -> StripLayout | None:
    """Where ``patches`` lie in their strips; None when some patch has no reference there (a
    folder set's one patch per image), which would leave the strip reference NaN every epoch:
    it is then not compared at all, so ``val/scorers_compared`` counts only real candidates."""
    layout = StripLayout(np.asarray(patches.strip_index), np.stack([patches.x, patches.y], 1),
                         bank)
    lonely = layout.lonely(*patches.images.shape[-2:])
    if lonely is not None:
        log.info("the strip reference is not compared: the patch at %s of strip %d has no "
                 "other patch of its strip to be compared with", lonely[1], lonely[0])
        return None
    return layout


def claim_resources() -> tuple[torch.device, int, float]:
    """(device, bytes of patches the trial may place on it, CPUs granted): torch threads = CPUs
    Ray granted this trial; CUDA when Ray assigned a GPU, capped to the trial's share of it."""
    granted = ray.get_runtime_context().get_assigned_resources()
    cpus = float(granted.get("CPU", 1))
    torch.set_num_threads(max(1, int(cpus)))
    if not (ray.get_gpu_ids() and torch.cuda.is_available()):
        return torch.device("cpu"), 0, cpus  # on a CPU the patches stay in the object store
    return (*claim_gpu(min(1.0, float(granted.get("GPU", 1.0)))), cpus)


def claim_gpu(share: float) -> tuple[torch.device, int]:
    """``cuda:0`` (Ray sets CUDA_VISIBLE_DEVICES to the assigned GPU), capped to ``share`` of
    its memory, and the bytes of patches a trial may place there."""
    device = torch.device("cuda", 0)
    # A reused actor starts its next trial here: hand the last trial's cached blocks back, so
    # the trials sharing this GPU see the memory their fractions promise.
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(share, device)
    torch.backends.cudnn.benchmark = True  # one patch size per trial: tune each conv once
    total = torch.cuda.get_device_properties(device).total_memory
    return device, int(total * share * DATA_SHARE_OF_DEVICE)


def _restore(directory: Path, config: VAEConfig, device: torch.device
             ) -> tuple[torch.nn.Module, torch.optim.Optimizer, int] | None:
    """The model, optimizer and epoch of the checkpoint; None when it cannot be resumed."""
    restored = trial_checkpoint.read(directory, map_location=device)
    if not _same_trial(restored.model.config, config):
        raise RuntimeError(f"checkpoint {directory} holds a different config than this trial")
    if restored.optimizer_state is None:
        # A checkpoint that stopped being the latest after Tune's last experiment snapshot
        # (the driver died in between) lost its optimizer state to pruning. The trial starts
        # over: its seeds replay the same epochs (bit for bit on a CPU), only time is lost.
        log.warning("checkpoint %s of epoch %d has no optimizer state; restarting the trial "
                    "from epoch 0 (same seeds)", directory, restored.epoch)
        return None
    model = prepare_model(restored.model, device)
    optimizer = make_optimizer(model, config.train)
    optimizer.load_state_dict(restored.optimizer_state)
    return model, optimizer, restored.epoch


class OptimizerStateWindow:
    """Prunes Adam's state from a trial's checkpoints once ``size`` newer ones are persisted.

    Resuming needs the state of the checkpoint the driver's last experiment snapshot recorded,
    which may lag the trial's latest: Tune snapshots every few seconds and whenever a trial has
    checkpointed ``num_to_keep`` times since the last snapshot, so the recorded one is among the
    last ``num_to_keep + 1`` (``TrialData.resume_window``). Pruning only the latest's
    predecessor (what "only the latest needs it" suggests) made a driver killed between two
    snapshots restart such a trial from epoch 0.
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.recent: collections.deque[tune.Checkpoint] = collections.deque()

    def persisted(self, checkpoint: tune.Checkpoint | None) -> None:
        if checkpoint is None:
            return
        self.recent.append(checkpoint)
        while len(self.recent) > self.size:
            old = self.recent.popleft()
            trial_checkpoint.prune(old.filesystem, old.path)


def _report_nonfinite(epoch: int, resumed_from: int, reason: str) -> None:
    log.warning("stopping trial at epoch %d: %s", epoch, reason)
    tune.report({keys.EPOCH: epoch, keys.VAL_OBJECTIVE: math.nan, keys.VAL_AUROC: math.nan,
                 NONFINITE: 1, RESUMED_FROM: resumed_from})


def _aurocs(scores: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    return {name: image_auroc(values, labels) if np.isfinite(values).all() else math.nan
            for name, values in scores.items()}


def validate(model: torch.nn.Module, val_images: torch.Tensor, val_labels: np.ndarray,
             config: VAEConfig, real: tuple[torch.Tensor, np.ndarray] | None = None,
             objective: str = "synthetic", layouts: tuple[StripLayout | None, ...] = (None, None)
             ) -> tuple[dict[str, float], np.ndarray, np.ndarray | None, ScoreConfig]:
    """``val/*`` metrics, the per-patch scores behind the AUROCs and the scorer that made them,
    from one forward pass per patch (``vae.validation``) on the model's device.

    ``real``: the real validation patches and labels, when the data has them. With
    ``score.select = "best"`` every scorer of ``vae.score.scorers.NAMES`` scores the same
    reconstructions and the one with the best ``val/objective`` wins (so with ``--objective
    real`` real defects choose the scorer too); ``val/auroc_by_scorer/<name>`` (and
    ``val/real_auroc_by_scorer/<name>``) keep them all and ``val/scorers_compared`` says how
    many were compared (the selection bias). ``layouts``: where the validation and the real
    validation patches lie in their strips; the strip-reference scorer is compared only when
    both sets that are scored have one.
    """
    val_layout, real_layout = layouts
    scorers = candidates(config.score, reference=val_layout is not None
                         and (real is None or real_layout is not None))
    metrics, scores = validation_pass(model, val_images, scorers, val_labels == 0,
                                      layout=val_layout)
    aurocs = _aurocs(scores, val_labels)
    real_scores = score_candidates(model, real[0], scorers, layout=real_layout) \
        if real is not None else None
    real_aurocs = _aurocs(real_scores, real[1]) if real_scores is not None else \
        dict.fromkeys(scorers, math.nan)
    values = {name: combine(objective, aurocs[name], real_aurocs[name]) for name in scorers}
    best = pick_best(values)
    metrics.update({keys.VAL_OBJECTIVE: values[best], keys.VAL_AUROC: aurocs[best]})
    if real_scores is not None:
        metrics[keys.VAL_REAL_AUROC] = real_aurocs[best]
    if len(scorers) > 1:
        metrics[keys.VAL_SCORERS_COMPARED] = float(len(scorers))
        metrics[keys.VAL_SCORER_INDEX] = float(NAMES.index(best))
        metrics.update({f"{keys.VAL_AUROC_BY_SCORER}/{name}": value
                        for name, value in aurocs.items()})
        if real_scores is not None:
            metrics.update({f"{keys.VAL_REAL_AUROC_BY_SCORER}/{name}": value
                            for name, value in real_aurocs.items()})
    return metrics, scores[best], None if real_scores is None else real_scores[best], \
        scorers[best]


def _same_trial(saved: VAEConfig, config: VAEConfig) -> bool:
    """A checkpoint belongs to this trial; a "best" scorer may have replaced its score section."""
    if config.score.select != "fixed":
        return replace(saved, score=config.score) == config \
            and saved.score in candidates(config.score).values()
    return saved == config


def train_vae(config: dict[str, Any], data: TrialData) -> None:
    """One trial: ``config`` holds dotted config keys (Ray's ``param_space`` + the searcher's)."""
    vae_config = VAEConfig().with_overrides(config)
    device, budget, cpus = claim_resources()
    meter = ResourceMeter(device, cpus)
    train_images, val_images, real = data.tensors(device, budget)
    checkpoint = tune.get_checkpoint()
    restored = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            restored = _restore(Path(directory), vae_config, device)
    if restored is not None:
        model, optimizer, start = restored
        log.info("resuming from the checkpoint of epoch %d", start)
    else:
        torch.manual_seed(vae_config.train.seed)  # the same config starts from the same weights
        model = prepare_model(build_model(vae_config), device)
        optimizer, start = make_optimizer(model, vae_config.train), 0
    window = OptimizerStateWindow(data.resume_window)
    window.persisted(checkpoint if restored is not None else None)  # resumed: the first
    try:
        for epoch in range(start, vae_config.train.num_epochs):
            done = epoch + 1  # epochs completed after this one; what `epoch` reports
            meter.start()
            try:
                train_metrics = train_epoch(model, optimizer, train_images, vae_config, device,
                                            epoch=epoch)
            except NonFiniteLossError as error:
                return _report_nonfinite(done, start, str(error))
            val_metrics, scores, real_scores, scorer = validate(
                model, val_images, data.val_labels, vae_config, real, data.objective,
                (data.val_layout, data.real_layout))
            model.config = replace(vae_config, score=scorer)  # the checkpoint scores as reported
            # One scorer's undefined AUROC is that scorer's problem (pick_best skips it), not
            # the trial's, and so is a figure the objective does not use: only the objective's
            # figures and the losses decide a non-finite stop.
            unused = {keys.VAL_AUROC, keys.VAL_REAL_AUROC} - set(figures(data.objective))
            bad = sorted(k for k, v in {**train_metrics, **val_metrics}.items()
                         if not math.isfinite(v) and not k.startswith(BY_SCORER)
                         and k not in unused)
            if bad:
                return _report_nonfinite(done, start, f"non-finite {bad}")
            # Key order matters: Ray's trial table shows the first few reported metrics.
            metrics = {keys.EPOCH: done, keys.VAL_OBJECTIVE: val_metrics.pop(keys.VAL_OBJECTIVE),
                       keys.VAL_AUROC: val_metrics.pop(keys.VAL_AUROC),
                       keys.VAL_MSE: val_metrics.pop(keys.VAL_MSE),
                       keys.TRAIN_LOSS: train_metrics.pop(keys.TRAIN_LOSS),
                       **val_metrics, **train_metrics, **meter.read(), NONFINITE: 0,
                       RESUMED_FROM: start}
            with tempfile.TemporaryDirectory(prefix="aitexvae-ckpt-") as directory:
                trial_checkpoint.write(directory, model, optimizer, done, metrics, scores,
                                       real_scores)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
            window.persisted(tune.get_checkpoint())  # the one just persisted to the storage path
    finally:
        meter.close()  # a GPU sampler must not outlive its trial in a reused actor
