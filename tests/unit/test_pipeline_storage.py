"""Artifact I/O through fsspec and the checkpoint scan used on a retry."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
from pipelines.churn import storage


def test_uri_mapping() -> None:
    assert storage.resolve("pvc://models/churn/", "/mnt/pvc") == "file:///mnt/pvc/models/churn/"
    assert storage.resolve("s3://b/k") == "s3://b/k"
    assert storage.local_path("file:///tmp/a") == "/tmp/a" and storage.local_path("/tmp/a") == "/tmp/a"
    assert storage.local_path("gs://b/a") is None
    assert storage.ray_storage_path("file:///tmp/run/checkpoints/") == "/tmp/run/checkpoints"
    assert storage.ray_storage_path("s3://b/run/checkpoints/") == "s3://b/run/checkpoints"
    assert storage.join("s3://b/runs/x/", "checkpoints", "/y/") == "s3://b/runs/x/checkpoints/y"


def test_json_round_trip_creates_directories(tmp_path: Path) -> None:
    uri = (tmp_path / "a" / "b" / "doc.json").as_uri()
    assert storage.read_json(uri) is None
    storage.write_json(uri, {"x": [1, 2]})
    assert storage.read_json(uri) == {"x": [1, 2]}
    assert not list(tmp_path.rglob("*.tmp"))
    storage.write_bytes(uri, b"{}")
    assert storage.read_bytes(uri) == b"{}"


def test_object_store_path_writes_directly() -> None:
    storage.write_json("memory://bucket/run/manifest.json", {"ok": True})
    with fsspec.open("memory://bucket/run/manifest.json", "rb") as handle:
        assert json.loads(handle.read()) == {"ok": True}


def test_latest_checkpoint_is_the_highest_epoch(tmp_path: Path) -> None:
    experiment = tmp_path / "checkpoints" / "run-a"
    assert storage.latest_checkpoint(experiment.as_uri()) is None
    for name, epoch in [("checkpoint_b", 3), ("checkpoint_a", 7), ("checkpoint_c", 5)]:
        (experiment / name).mkdir(parents=True)
        (experiment / name / storage.CHECKPOINT_META).write_text(json.dumps({"epoch": epoch}))
    (experiment / "checkpoint_partial").mkdir()  # no meta.json: ignored
    found = storage.latest_checkpoint(experiment.as_uri())
    assert found is not None
    uri, epoch = found
    assert epoch == 7 and uri.endswith("/checkpoint_a") and uri.startswith("file://")
