"""The churn model: a small MLP whose standardization is part of the module.

The exported TorchScript (`ChurnScorer`) takes raw feature values, float32 of shape
(N, len(features)) in the manifest's feature order, and returns churn probabilities of shape (N,).
Missing values (NaN) are imputed with the training mean, as in training.
"""

import io
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def standardization(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of the finite values (std 1 where a column is constant or empty)."""
    x = np.where(np.isfinite(features), features, np.nan).astype("float64")
    counts = np.isfinite(x).sum(axis=0)
    mean = np.where(counts > 0, np.nansum(x, axis=0) / np.maximum(counts, 1), 0.0)
    var = np.where(counts > 0, np.nansum((x - mean) ** 2, axis=0) / np.maximum(counts, 1), 1.0)
    std = np.sqrt(var)
    std = np.where(std > 1e-12, std, 1.0)
    return mean.astype("float32"), std.astype("float32")


class ChurnMLP(nn.Module):
    """Standardize (NaN -> 0 after standardizing, i.e. the mean), then an MLP; returns logits (N,).

    (No `from __future__ import annotations` in this module: TorchScript reads these annotations.)
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.0,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean if mean is not None else np.zeros(n_features, "float32")))
        self.register_buffer("std", torch.as_tensor(std if std is not None else np.ones(n_features, "float32")))
        layers: list[nn.Module] = []
        width = n_features
        for units in hidden:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nan_to_num((x - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)
        logits: torch.Tensor = self.net(z).squeeze(-1)
        return logits


class ChurnScorer(nn.Module):
    """What is exported: raw features in, churn probabilities out."""

    def __init__(self, model: ChurnMLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x.to(torch.float32)))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    inner = getattr(model, "module", model)
    assert isinstance(inner, nn.Module)
    return inner


def predict(model: ChurnMLP, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Probabilities for a float array of raw features, on the CPU."""
    scorer = ChurnScorer(model).eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = torch.as_tensor(features[start : start + batch_size], dtype=torch.float32)
            out.append(scorer(batch).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype="float32")


def torchscript_bytes(model: ChurnMLP) -> bytes:
    """The TorchScript of `ChurnScorer(model)` on the CPU, as the bytes of a model.pt file."""
    scripted = torch.jit.script(ChurnScorer(model).cpu().eval())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    return buffer.getvalue()
