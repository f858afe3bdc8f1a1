"""Models the predictor's unit tests score with."""

from __future__ import annotations

import torch


class Poisoned(torch.nn.Module):
    """Raises when any value is above 1e6 (a request that breaks the model); NaN out for -1e6."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x > 1e6).any()):
            raise RuntimeError("poisoned input")
        out: torch.Tensor = self.inner(x)
        return torch.where((x < -1e6).any(dim=1), torch.full_like(out, float("nan")), out)
