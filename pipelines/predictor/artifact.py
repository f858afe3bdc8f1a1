"""Reading (and, for faults and tests, writing) a run directory: manifest.json and the TorchScript."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.churn import storage
from slipway.api.artifacts import MANIFEST_FILE, Manifest


class ArtifactError(RuntimeError):
    """The run directory cannot be served; the message says what is wrong."""


@dataclass(frozen=True)
class Artifact:
    uri: str
    manifest: Manifest
    model: torch.jit.ScriptModule


def _uri(base: str) -> str:
    return storage.resolve(base)


def read_manifest(run_dir: str) -> Manifest:
    uri = storage.join(_uri(run_dir), MANIFEST_FILE)
    raw = storage.read_json(uri)
    if raw is None:
        raise ArtifactError(f"no {MANIFEST_FILE} in {run_dir}: not a finished training run")
    manifest = Manifest.model_validate(raw)
    if not manifest.features:
        raise ArtifactError(f"{uri} lists no features")
    return manifest


def load_model(run_dir: str, manifest: Manifest) -> torch.jit.ScriptModule:
    uri = storage.join(_uri(run_dir), manifest.model_file)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ArtifactError(f"the manifest names {manifest.model_file} but {uri} does not exist") from None
    model: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(data), map_location="cpu")  # type: ignore[no-untyped-call]
    model.eval()
    return model


def load(run_dir: str) -> Artifact:
    """The manifest and the model of a run directory (a path or an fsspec URI)."""
    manifest = read_manifest(run_dir)
    return Artifact(run_dir, manifest, load_model(run_dir, manifest))


def write(run_dir: str, model_bytes: bytes, manifest: Manifest | dict[str, Any]) -> None:
    """A run directory as the training pipeline leaves it: the model, then the manifest."""
    base = _uri(run_dir)
    doc = manifest.model_dump(mode="json", by_alias=True) if isinstance(manifest, Manifest) else manifest
    storage.write_bytes(storage.join(base, str(doc.get("modelFile", "model.pt"))), model_bytes)
    storage.write_text(storage.join(base, MANIFEST_FILE), json.dumps(doc, indent=2) + "\n")


def script_bytes(module: torch.nn.Module) -> bytes:
    """TorchScript bytes of a module (scripted on the CPU, in eval mode)."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module.cpu().eval()), buffer)
    return buffer.getvalue()
