"""The training objective: weighted reconstruction terms (MSE, BCE, FFT) + beta · KL.

Every term is summed over the pixels of one image and averaged over the batch, so the scale
of the loss does not depend on the batch size and trials with different batch sizes compare
fairly (the negative ELBO of Kingma & Welling 2014, eq. 3, per image; beta as in Higgins et al.
2017). All terms are computed in float32 with autocast off.

Terms whose weight is 0: ``mse`` is always computed (cheap, and makes ``train/mse_sum``
comparable across trials; without gradient), ``bce`` and ``fft`` are skipped and returned as 0.0
(``vae.train`` does not report them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vae.config import LossConfig
from vae.model import VAEOutput

LOSS_TERMS = ("loss", "mse", "bce", "fft", "kl")
# Floor added to |F|² before the log: with norm="ortho" a bin's magnitude is on the scale of the
# pixel values, so 1e-4 (|F| ≈ 0.01) keeps log and its gradient bounded for empty bins without
# hiding the weak high-frequency content of fabric.
SPECTRUM_FLOOR = 1e-4


def bce_on_probabilities(probabilities: Tensor, x: Tensor) -> Tensor:
    """Summed BCE on probabilities, ``F.binary_cross_entropy(reduction="sum")`` written out.

    The library kernel raises on a NaN input (CPU: RuntimeError, CUDA: a device-side assert),
    but a diverged model must surface as a NaN that the training loop turns into
    ``NonFiniteLossError``. p and 1 − p are floored at the smallest normal float32 (log ≥ −87.3,
    where torch clamps the log at −100), so a saturated sigmoid (p exactly 0 or 1 in fp32, e.g.
    logits > 17) gives a finite loss and a zero, not NaN, gradient.
    """
    tiny = torch.finfo(torch.float32).tiny
    log_p = torch.log(probabilities.clamp(min=tiny))
    log_not_p = torch.log((1.0 - probabilities).clamp(min=tiny))
    return -(x * log_p + (1.0 - x) * log_not_p).sum()


def log_magnitude_spectrum(images: Tensor) -> Tensor:
    """½ log(|rfft2(images)|² + floor), float32, shape (B, C, H, W//2 + 1)."""
    with torch.autocast(device_type=images.device.type, enabled=False):
        spectrum = torch.fft.rfft2(images.float(), norm="ortho")
        power = spectrum.real.square() + spectrum.imag.square()  # smooth at 0, unlike abs()
        return 0.5 * torch.log(power + SPECTRUM_FLOOR)


def fft_loss(recon: Tensor, x: Tensor) -> Tensor:
    """L1 distance between log-magnitude spectra, summed per image, mean over the batch.

    Why this and not the focal frequency loss (Jiang et al. 2021): fabric is a periodic
    texture whose spectrum is a few strong weave peaks over a weak broadband floor, and a
    defect shows up as a change of that spectrum (a broken period, extra broadband energy).
    The log compresses the dynamic range so that the floor counts as much as the peaks (as in
    the log-STFT-magnitude loss of Yamamoto et al. 2020, eq. 3), and the magnitude ignores
    phase, so a reconstruction is not punished for a texture that is shifted by a pixel — which
    a small latent cannot pin down. The focal loss compares complex spectra, so it is
    phase-sensitive, and with uniform weights it reduces to pixel MSE (Parseval).
    """
    difference = log_magnitude_spectrum(recon) - log_magnitude_spectrum(x)
    return difference.abs().flatten(1).sum(1).mean()


def vae_loss(output: VAEOutput, x: Tensor, loss_config: LossConfig) -> dict[str, Tensor]:
    """``{"loss", "mse", "bce", "fft", "kl"}``: scalar tensors; ``loss`` is the weighted total.

    ``x`` is the model input (float, input range). BCE targets must lie in [0, 1]: the config
    only allows a BCE weight with the ``sigmoid`` and ``none`` (logits) activations, whose
    inputs are in the unit range.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        recon = output.recon.float()
        batch = x.shape[0]
        zero = x.new_zeros(())

        with torch.set_grad_enabled(torch.is_grad_enabled() and loss_config.mse_weight > 0):
            mse = (recon - x).square().sum() / batch

        bce = zero
        if loss_config.bce_weight > 0:
            if output.logits is not None:
                bce = F.binary_cross_entropy_with_logits(output.logits.float(), x,
                                                         reduction="sum") / batch
            else:
                bce = bce_on_probabilities(recon, x) / batch

        fft = fft_loss(recon, x) if loss_config.fft_weight > 0 else zero
        # Per image: a tiled model has one posterior per tile, and an image's KL is their sum.
        kl = output.posterior.kl().sum() / batch

        loss = (loss_config.mse_weight * mse + loss_config.bce_weight * bce
                + loss_config.fft_weight * fft + loss_config.kl_weight * kl)
    return {"loss": loss, "mse": mse, "bce": bce, "fft": fft, "kl": kl}
