"""Experiment for #10 (not a benchmark of the service, not a test): does a DRAEM-style
discriminative head on (x, reconstruction) beat the residual scorers on real AITEX?

The "reconstruction" is the training-free floor (a Gaussian blur, sigma 12), so the head is the
only learned part: a small encoder-decoder on (x, x_hat, |x - x_hat|) trained with a focal loss
to segment the training corruption (``vae.data.corruption``, the denoising generator, never the
validation defects) pasted into defect-free training patches, for a wall-time budget. A patch's
score is the max of its 9x9-smoothed probability map. Prints the test split's fabric-matched and
DRA-protocol AUROC and ends with ``ratio fabric-matched-auroc: X``.

    .venv/bin/python bench/discriminative_head_probe.py --budget-s 600
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.real_quality import dra_auroc  # noqa: E402
from vae.data import DataConfig, load_splits  # noqa: E402
from vae.data.corruption import corrupt  # noqa: E402
from vae.score import image_auroc  # noqa: E402
from vae.score.metrics import evaluate_scores  # noqa: E402

SIGMA, BATCH, CORRUPTION_P, SMOOTH = 12.0, 12, 0.8, 9


def gaussian_blur(x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """(B, 1, H, W) float → the same blurred (separable, reflect padding)."""
    radius = int(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def _block(channels_in: int, channels_out: int, stride: int = 1, dilation: int = 1
           ) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, dilation,
                                   dilation=dilation),
                         nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))


class Head(nn.Module):
    """A small encoder-decoder (skips, dilated middle) from (x, x̂, |x - x̂|) to mask logits."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.e1, self.e2 = _block(3, width), _block(width, 2 * width, 2)
        self.e3 = _block(2 * width, 2 * width, 2)
        self.middle = nn.Sequential(_block(2 * width, 2 * width, dilation=2),
                                    _block(2 * width, 2 * width, dilation=4))
        self.d2, self.d1 = _block(4 * width, width), _block(2 * width, width)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        a = self.e1(torch.cat([x, recon, (x - recon).abs()], 1))
        b = self.e2(a)
        c = F.interpolate(self.middle(self.e3(b)), size=b.shape[-2:], mode="bilinear")
        b = F.interpolate(self.d2(torch.cat([b, c], 1)), size=a.shape[-2:], mode="bilinear")
        return self.out(self.d1(torch.cat([a, b], 1)))


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = p * target + (1 - p) * (1 - target)
    return (ce * (1 - p_true) ** gamma).mean()


def train_head(train: np.ndarray, budget_s: float) -> tuple[Head, int]:
    head, generator = Head(), torch.Generator().manual_seed(1234)
    optimizer = torch.optim.Adam(head.parameters(), 1e-3)
    images, start, step = torch.from_numpy(train), time.perf_counter(), 0
    head.train()
    while time.perf_counter() - start < budget_s:
        batch = images[torch.randint(0, len(images), (BATCH,), generator=generator)]
        if torch.rand(1, generator=generator) < 0.5:
            batch = batch.flip(-1)
        corrupted, masks = corrupt(batch, CORRUPTION_P, generator)
        x = corrupted.float() / 255
        loss = focal_loss(head(x, gaussian_blur(x)), masks[:, None].float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 25 == 0:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    return head.eval(), step


def patch_scores(head: Head, images: np.ndarray) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            x = torch.from_numpy(images[start:start + 32]).float() / 255
            probability = F.avg_pool2d(torch.sigmoid(head(x, gaussian_blur(x))), SMOOTH, 1,
                                       SMOOTH // 2)
            out.append(probability.flatten(1).amax(1))
    return torch.cat(out).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/aitex-dev"))
    parser.add_argument("--budget-s", type=float, default=600, help="training wall time")
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = load_splits(DataConfig(format="aitex", root=args.data_root, patch_size=256))
    head, steps = train_head(splits.train.images, args.budget_s)
    test = splits.test
    scores = patch_scores(head, test.images)
    matched = evaluate_scores(scores, test.labels, strips=test.strip)["patch_auroc_fabric_matched"]
    synthetic = image_auroc(patch_scores(head, splits.val.images), splits.val.labels)
    print(f"{steps} steps of {BATCH}; val/auroc (synthetic defects) {synthetic:.3f}")
    if splits.has_real_val:
        real = image_auroc(patch_scores(head, splits.real_val.images), splits.real_val.labels)
        print(f"val/real_auroc {real:.3f}")
    print(f"test: fabric-matched {matched:.4f}, DRA {dra_auroc(scores, test.labels, test.strip):.4f}")
    print(f"ratio fabric-matched-auroc: {matched:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
