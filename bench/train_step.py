"""Training-step throughput: the project's step vs a plain loop of the seed architecture.

Both run in this one process on the same uint8 batches (256×256, batch 16, latent 32, BCE + KL,
Adam), measured in alternating rounds so that load from other processes hits both alike; the
reported ratio is the median of the per-round ratios. The seed side is the code of
shared/seeds/vae-concepts.md, written out below: fp32, NCHW, plain Adam. The project side is
``vae.train.train_epoch`` with the default config (channels_last, fused Adam, gradient clipping,
bf16 autocast where ``train.precision="auto"`` picks it, patches placed on the device once, one
host sync per epoch); its fp32 variant is shown as well.

Quality: both start from the same weights and take the same number of steps on one fixed batch;
the per-image loss above the data's entropy (fp32, eval mode, posterior mean) must not end
more than 5 % above the seed's.

    .venv/bin/python bench/train_step.py [--rounds 7] [--steps 3] [--quality-steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vae.config import VAEConfig
from vae.model import build_model
from vae.train import autocast_dtype, make_optimizer, place_images, select_device, train_epoch

BATCH, SIZE, LATENT = 16, 256, 32


# -- the seed, as in vae-concepts.md ----------------------------------------------------------
class SeedAitexVAE(nn.Module):
    def __init__(self, in_channels=1, latent_dim=LATENT, image_size=SIZE, dropout_p=0.1):
        super().__init__()
        self.feature_map_size = image_size // 16
        self.feature_map_dim = 256 * (self.feature_map_size ** 2)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(), nn.Dropout2d(dropout_p),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(), nn.Dropout2d(dropout_p),
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
            nn.ReLU(), nn.Dropout2d(dropout_p),
            nn.Conv2d(128, 256, kernel_size=3, stride=2, padding=1),
            nn.ReLU(), nn.Dropout2d(dropout_p),
            nn.Flatten(),
        )
        self.fc_mu = nn.Linear(self.feature_map_dim, latent_dim)
        self.fc_logvar = nn.Linear(self.feature_map_dim, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, 64 * (self.feature_map_size ** 2))
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (64, self.feature_map_size, self.feature_map_size)),
            nn.ConvTranspose2d(64, 32, kernel_size=4, stride=4, padding=0),
            nn.ReLU(),
            nn.ConvTranspose2d(32, in_channels, kernel_size=4, stride=4, padding=0),
            nn.Sigmoid(),
        )

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def forward(self, x):
        encoded = self.encoder(x)
        mu = self.fc_mu(encoded)
        logvar = self.fc_logvar(encoded)
        z = self.reparameterize(mu, logvar)
        dec_input = self.fc_dec(z)
        x_recon = self.decoder(dec_input)
        return x_recon, mu, logvar


def seed_vae_loss(x, x_recon, mu, logvar):
    recon_loss = F.binary_cross_entropy(x_recon, x, reduction="sum")
    kl_loss = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return recon_loss + kl_loss


def seed_steps(model, optimizer, images: torch.Tensor, device: torch.device) -> None:
    model.train()
    for batch in images.split(BATCH):
        x = batch.to(device).float().div(255.0)
        optimizer.zero_grad()
        x_recon, mu, logvar = model(x)
        seed_vae_loss(x, x_recon, mu, logvar).backward()
        optimizer.step()


# -- shared helpers ---------------------------------------------------------------------------
def fabric_images(count: int, seed: int = 0) -> torch.Tensor:
    """A twill-like periodic texture with yarn noise, uint8 (count, 1, 256, 256)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    images = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi, 2)
        weave = np.sin(2 * np.pi * (xx + yy) / 8 + phase[0]) * np.cos(2 * np.pi * yy / 5 + phase[1])
        image = 128 + 45 * weave + rng.normal(0, 12, (SIZE, SIZE))
        images.append(image.clip(0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(images)[:, None])


def seed_step_flops(device: torch.device) -> int:
    model = SeedAitexVAE().to(device)
    x = fabric_images(BATCH).to(device).float().div(255.0)
    with FlopCounterMode(display=False) as counter:
        seed_vae_loss(x, *model(x)).backward()
    return counter.get_total_flops()


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def excess_loss_and_mse(encode_decode, x: torch.Tensor) -> tuple[float, float]:
    """Per-image BCE(sum) + KL above the data's own entropy (the BCE floor, reached by a
    perfect reconstruction), and per-pixel MSE; fp32, posterior mean decoded; one yardstick
    for both sides."""
    recon, mu, logvar = encode_decode(x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    floor = F.binary_cross_entropy(x, x, reduction="sum")
    excess = (F.binary_cross_entropy(recon, x, reduction="sum") - floor + kl) / len(x)
    return excess.item(), F.mse_loss(recon, x).item()


def quality(device: torch.device, steps: int) -> dict[str, tuple[float, float]]:
    """(excess loss, MSE) at the shared start and after ``steps`` steps on one batch."""
    config = VAEConfig().with_overrides({"train.batch_size": BATCH})
    torch.manual_seed(0)
    seed = SeedAitexVAE().to(device)
    project = build_model(config)
    state = {("head." + k if k.startswith(("fc_mu", "fc_logvar")) else k): v
             for k, v in seed.state_dict().items()}
    project.load_state_dict(state)  # strict: the same architecture, the same weights
    batch = fabric_images(BATCH, seed=1)
    x = batch.to(device).float().div(255.0)

    def seed_eval(x):
        h = seed.encoder(x)
        mu, logvar = seed.fc_mu(h), seed.fc_logvar(h)
        return seed.decoder(seed.fc_dec(mu)), mu, logvar

    def project_eval(x):
        posterior = project.encode(x)
        return project.decode(posterior.mean)[0], posterior.mean, posterior.logvar

    seed.eval()
    results = {"start": excess_loss_and_mse(seed_eval, x)}
    seed_optimizer = torch.optim.Adam(seed.parameters(), lr=1e-3)
    for _ in range(steps):
        seed_steps(seed, seed_optimizer, batch, device)
    seed.eval()
    results["seed"] = excess_loss_and_mse(seed_eval, x)
    project.to(device)
    project_optimizer = make_optimizer(project, config.train)
    for epoch in range(steps):
        train_epoch(project, project_optimizer, batch, config, device, epoch=epoch)
    project.eval()
    project.to(memory_format=torch.contiguous_format)
    results["project"] = excess_loss_and_mse(project_eval, x)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating A/B rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per measurement")
    parser.add_argument("--quality-steps", type=int, default=20)
    args = parser.parse_args()
    device = select_device()
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"auto precision -> {autocast_dtype('auto', device)}")
    flops = seed_step_flops(device)
    print(f"seed training step: {flops / 1e9:.1f} GFLOP (torch.utils.flop_counter, batch {BATCH})")

    images = fabric_images(BATCH * args.steps)
    torch.manual_seed(0)
    seed = SeedAitexVAE().to(device)
    seed_optimizer = torch.optim.Adam(seed.parameters(), lr=1e-3)
    variants = {"project auto": VAEConfig().with_overrides({"train.batch_size": BATCH}),
                "project fp32": VAEConfig().with_overrides({"train.batch_size": BATCH,
                                                            "train.precision": "off"})}
    models = {}
    for name, config in variants.items():
        model = build_model(config).to(device)
        models[name] = (model, make_optimizer(model, config.train), config)

    # The project side as a trial runs it: uint8 patches placed on the device once (a GPU's;
    # on a CPU nothing moves), cudnn.benchmark on (global: the seed loop gets it too).
    placed = place_images(images, device, budget_bytes=images.numel())
    torch.backends.cudnn.benchmark = device.type == "cuda"
    runners = {"seed": lambda: seed_steps(seed, seed_optimizer, images, device)}
    for name, (model, optimizer, config) in models.items():
        runners[name] = (lambda m=model, o=optimizer, c=config:
                         train_epoch(m, o, placed, c, device))
    for run in runners.values():  # warm-up: allocator, oneDNN primitives
        run()
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(args.rounds):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in order:
            rates[name].append(len(images) / timed(runners[name], device))
    ratios = [p / s for p, s in zip(rates["project auto"], rates["seed"], strict=True)]

    print(f"\n{'variant':<14}{'images/s (median)':>18}{'GFLOP/s':>10}   per-round images/s")
    for name, values in rates.items():
        median = statistics.median(values)
        gflops = median / BATCH * flops / 1e9
        print(f"{name:<14}{median:>18.1f}{gflops:>10.1f}   "
              + " ".join(f"{v:.1f}" for v in values))
    print(f"per-round speed-up (project auto / seed): {' '.join(f'{r:.2f}' for r in ratios)}")

    results = quality(device, args.quality_steps)
    print(f"\nquality after {args.quality_steps} steps on one batch, same start (per-image "
          "BCE+KL above the BCE floor; per-pixel MSE):")
    for name, (excess, mse) in results.items():
        print(f"  {name:<8} excess {excess:10.1f}   mse {mse:.5f}")
    seed_excess, project_excess = results["seed"][0], results["project"][0]
    verdict = "ok" if project_excess <= 1.05 * seed_excess else "WORSE than the seed"
    print(f"  project/seed excess loss: {project_excess / seed_excess:.3f} ({verdict})")
    print(f"ratio train_step_speedup: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
