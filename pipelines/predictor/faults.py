"""Faulty versions of a trained model, for rollback tests and demos.

`python -m pipelines.predictor.faults --source RUN_DIR --out DIR (--error-rate F | --shift S)`
copies RUN_DIR's manifest into DIR and writes a TorchScript `model.pt` that wraps RUN_DIR's model:

- `--error-rate F`: each forward call raises with probability F (`torch.rand` inside the
  TorchScript), so the predictor answers 500 for that call. A lone request is one call, so at
  concurrency 1 about F of the requests fail. When a batch of several requests fails, the
  predictor runs each request again alone (a fresh draw), so under concurrency a request fails
  with probability F x (chance its batch failed), i.e. about F squared: use a large F there.
- `--shift S`: the probabilities become clamp(p + S, 0, 1): a version that serves, but drifts.

The faulty run directory serves like any other (STORAGE_URI / SLIPWAY_MODEL_DIR).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch import nn

from pipelines.churn import storage
from slipway.api.artifacts import MANIFEST_FILE

from . import artifact

INJECTED = "injected fault"


class ErrorRate(nn.Module):
    """Raises in forward for a random share `rate` of calls."""

    def __init__(self, inner: nn.Module, rate: float) -> None:
        super().__init__()
        self.inner = inner
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(1).item()) < self.rate:
            raise RuntimeError("injected fault")
        out: torch.Tensor = self.inner(x)
        return out


class Shift(nn.Module):
    """Adds `shift` to every probability, clamped to [0, 1]."""

    def __init__(self, inner: nn.Module, shift: float) -> None:
        super().__init__()
        self.inner = inner
        self.shift = float(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.inner(x) + self.shift, 0.0, 1.0)


def faulty(model: nn.Module, error_rate: float | None = None, shift: float | None = None) -> bytes:
    """TorchScript bytes of `model` (a TorchScript or eager module) wrapped with one fault."""
    if (error_rate is None) == (shift is None):
        raise ValueError("give exactly one of error_rate and shift")
    if error_rate is not None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {error_rate}")
        return artifact.script_bytes(ErrorRate(model, error_rate))
    assert shift is not None
    return artifact.script_bytes(Shift(model, shift))


def make_faulty(source: str, out: str, error_rate: float | None = None, shift: float | None = None) -> str:
    """A faulty copy of the run directory `source` in `out` (paths or fsspec URIs); returns `out`."""
    manifest = artifact.read_manifest(source)
    model = artifact.load_model(source, manifest)
    data = faulty(model, error_rate, shift)
    storage.write_bytes(storage.join(storage.resolve(out), manifest.model_file), data)
    raw = storage.read_bytes(storage.join(storage.resolve(source), MANIFEST_FILE))
    storage.write_bytes(storage.join(storage.resolve(out), MANIFEST_FILE), raw)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.predictor.faults", description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, help="the run directory to wrap (path or URI)")
    p.add_argument("--out", required=True, help="where to write the faulty run directory")
    fault = p.add_mutually_exclusive_group(required=True)
    fault.add_argument("--error-rate", type=float, help="share of forward calls that raise (0..1)")
    fault.add_argument("--shift", type=float, help="added to every probability (clamped to 0..1)")
    args = p.parse_args(argv)
    try:
        make_faulty(args.source, args.out, args.error_rate, args.shift)
    except (ValueError, artifact.ArtifactError) as exc:
        print(f"faults: {exc}", file=sys.stderr)
        return 2
    what = f"error rate {args.error_rate}" if args.error_rate is not None else f"shift {args.shift:+}"
    print(f"wrote {args.out} ({what}) from {args.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
