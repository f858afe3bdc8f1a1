"""The output directory: the parquet files Ray Data writes, then manifest.json last."""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow.parquet as pq

from pipelines.churn import failures, storage
from slipway.api.batchprediction import BATCH_FAILURE_FILE, BATCH_MANIFEST_FILE, BatchManifest

from .config import OUTPUT_FIELD

SUFFIX = ".parquet"


def parquet_files(directory: str) -> list[str]:
    """The parquet files directly in `directory`, relative to it, sorted."""
    fs, path = fsspec.core.url_to_fs(directory)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p) for p in fs.ls(path, detail=False) if str(p).endswith(SUFFIX))


def prepare(directory: str, uri: str) -> None:
    """Fails (ArtifactsUnwritable naming spec.output.uri) when the output cannot be written, and
    removes what an earlier attempt left: its manifest first (so nobody takes the directory for
    finished), its failure, and its parquet files (so no row is written twice)."""
    stale = [BATCH_MANIFEST_FILE, BATCH_FAILURE_FILE, *parquet_files(directory)]
    failures.prepare_directory(directory, stale, OUTPUT_FIELD, uri)


def count_rows(directory: str, files: list[str]) -> int:
    """Rows in the written files, from their parquet footers."""
    total = 0
    for name in files:
        with fsspec.open(storage.join(directory, name), "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def write_manifest(directory: str, manifest: BatchManifest) -> None:
    storage.write_text(storage.join(directory, BATCH_MANIFEST_FILE), manifest.model_dump_json(by_alias=True, indent=2))
