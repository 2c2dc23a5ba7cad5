"""Stand-in "models" whose reconstruction is a known function of the input, for scoring tests.

Scoring runs one encode and one decode of the posterior mean (``vae.score.maps.iter_passes``);
a stand-in keeps its input as that mean, so ``decode`` sees the input and applies the
subclass's ``reconstruct``.
"""

from __future__ import annotations

import torch
from torch import nn

from vae.posterior import DiagonalPosterior


class StandIn(nn.Module):
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> DiagonalPosterior:
        self._shape = x.shape[1:]
        flat = x.flatten(1)
        return DiagonalPosterior(flat, torch.zeros_like(flat))

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.reconstruct(z.view(-1, *self._shape)), None
