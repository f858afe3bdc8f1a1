"""Artifacts through fsspec: file:// here, s3:// and gs:// in a cluster, pvc:// as a mounted path."""

from __future__ import annotations

import json
import posixpath
from typing import Any
from urllib.parse import urlparse

import fsspec
from fsspec.implementations.local import LocalFileSystem

CHECKPOINT_META = "meta.json"  # written into every checkpoint: {"epoch": N}
WRITE_CHECK = ".write-check"


def resolve(uri: str, pvc_root: str = "/mnt/pvc") -> str:
    """The URI fsspec opens: pvc://CLAIM/PATH is the claim mounted at PVC_ROOT/CLAIM/PATH."""
    parsed = urlparse(uri)
    if parsed.scheme == "pvc":
        path = posixpath.join(pvc_root, parsed.netloc, parsed.path.strip("/")).rstrip("/")
        return "file://" + path + ("/" if uri.endswith("/") else "")
    return uri


def local_path(uri: str) -> str | None:
    """The local path of a file:// URI (or a bare path), None for remote stores."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return parsed.path if parsed.scheme else uri
    return None


def ray_storage_path(uri: str) -> str:
    """Ray Train's storage_path: a local path for file://, the URI itself for object stores."""
    path = local_path(uri)
    return path.rstrip("/") if path is not None else uri.rstrip("/")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as handle:
        data: bytes = handle.read()
    return data


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file; on a local disk through a temporary file and a rename."""
    fs, path = fsspec.core.url_to_fs(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp"
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as handle:
            handle.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def write_json(uri: str, value: Any) -> None:
    write_text(uri, json.dumps(value, indent=2, sort_keys=True) + "\n")


def remove(uri: str) -> None:
    """Deletes a file if it is there."""
    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path)


def check_writable(directory: str) -> None:
    """Writes and removes a small file in `directory` (creating it), raising what a write there
    raises: found at the start of a run, not when the model is written after training."""
    probe = join(directory, WRITE_CHECK)
    write_bytes(probe, b"")
    remove(probe)


def read_json(uri: str) -> Any | None:
    """The parsed document, or None when the file does not exist."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def latest_checkpoint(experiment_uri: str) -> tuple[str, int] | None:
    """(URI, epoch) of the checkpoint with the highest epoch under a Ray Train run directory."""
    fs, path = fsspec.core.url_to_fs(experiment_uri)
    if not fs.exists(path):
        return None
    best: tuple[str, int] | None = None
    for meta in fs.glob(posixpath.join(path.rstrip("/"), "*", CHECKPOINT_META)):
        with fs.open(meta, "rb") as handle:
            epoch = int(json.loads(handle.read())["epoch"])
        if best is None or epoch > best[1]:
            best = (fs.unstrip_protocol(posixpath.dirname(meta)), epoch)
    return best
