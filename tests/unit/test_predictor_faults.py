"""Faulty model versions: a share of forward calls raise, or the probabilities shift."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pipelines.churn import model as churn
from pipelines.predictor import artifact, faults

from slipway.api.artifacts import Manifest

FEATURES = ["sessions_30d", "monthly_charges"]


def tiny() -> churn.ChurnMLP:
    torch.manual_seed(0)
    return churn.ChurnMLP(len(FEATURES), hidden=(4,)).eval()


def load(data: bytes) -> torch.jit.ScriptModule:
    module: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(data))
    return module


def failures(model: torch.jit.ScriptModule, calls: int) -> int:
    x = torch.zeros(1, len(FEATURES))
    failed = 0
    for _ in range(calls):
        try:
            model(x)
        except torch.jit.Error as exc:
            assert faults.INJECTED in str(exc)
            failed += 1
    return failed


def test_error_rate_is_the_share_of_calls_that_raise() -> None:
    scorer = load(churn.torchscript_bytes(tiny()))
    torch.manual_seed(1)
    assert failures(load(faults.faulty(scorer, error_rate=0.0)), 200) == 0
    assert failures(load(faults.faulty(scorer, error_rate=1.0)), 50) == 50
    share = failures(load(faults.faulty(scorer, error_rate=0.3)), 2000) / 2000
    assert 0.25 < share < 0.35


def test_shift_moves_probabilities_and_clamps() -> None:
    scorer = load(churn.torchscript_bytes(tiny()))
    x = torch.tensor([[1.0, 2.0], [float("nan"), 50.0]])
    base = scorer(x)
    up = load(faults.faulty(scorer, shift=0.2))(x)
    torch.testing.assert_close(up, torch.clamp(base + 0.2, 0, 1))
    assert torch.equal(load(faults.faulty(scorer, shift=5.0))(x), torch.ones(2))
    assert torch.equal(load(faults.faulty(scorer, shift=-5.0))(x), torch.zeros(2))


def test_exactly_one_fault() -> None:
    scorer = load(churn.torchscript_bytes(tiny()))
    with pytest.raises(ValueError, match="exactly one"):
        faults.faulty(scorer)
    with pytest.raises(ValueError, match="exactly one"):
        faults.faulty(scorer, error_rate=0.1, shift=0.1)
    with pytest.raises(ValueError, match="within"):
        faults.faulty(scorer, error_rate=1.5)


def test_cli_writes_a_faulty_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "run", tmp_path / "faulty"
    artifact.write(str(source), churn.torchscript_bytes(tiny()), Manifest(metrics={"auc": 0.8}, features=FEATURES))
    assert faults.main(["--source", str(source), "--out", f"file://{out}", "--shift", "0.1"]) == 0
    assert "shift +0.1" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text()) == json.loads((source / "manifest.json").read_text())
    x = np.array([[3.0, 40.0]], dtype=np.float32)
    original = artifact.load(str(source)).model(torch.from_numpy(x))
    shifted = artifact.load(str(out)).model(torch.from_numpy(x))
    torch.testing.assert_close(shifted, torch.clamp(original + 0.1, 0, 1))
    assert faults.main(["--source", str(source), "--out", str(tmp_path / "f2"), "--error-rate", "1"]) == 0
    with pytest.raises(torch.jit.Error, match="injected fault"):
        artifact.load(str(tmp_path / "f2")).model(torch.from_numpy(x))
    assert faults.main(["--source", str(tmp_path / "nothing"), "--out", str(tmp_path / "f3"), "--shift", "1"]) == 2
    assert "no manifest.json" in capsys.readouterr().err
