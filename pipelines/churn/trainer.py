"""Training with Ray Train: `TorchTrainer` over `train_loop_per_worker`, a checkpoint every epoch.

Each epoch every worker reports its metrics and rank 0 a checkpoint (`state.pt`: model and
optimizer state, the epoch and the history so far; `meta.json`: the epoch). The Ray run is named
after the TrainingRun and stored under the run's checkpoints/ directory, so a retry of the same
run finds it: Ray Train restores the run's checkpoint manager and `ray.train.get_checkpoint()`
returns the latest checkpoint, from which training resumes at the next epoch.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .model import ChurnMLP, standardization, unwrap
from .storage import CHECKPOINT_META

if TYPE_CHECKING:  # workers unpickle this module: keep its imports light
    from .config import Hyperparameters

STATE_FILE = "state.pt"
CHECKPOINTS_TO_KEEP = 3


@dataclass(frozen=True)
class FitResult:
    model: ChurnMLP  # on the CPU, in eval mode
    epoch: int  # the last epoch trained (0-based)
    resumed_from_epoch: int | None
    history: list[dict[str, float]]


def build_model(config: dict[str, Any]) -> ChurnMLP:
    return ChurnMLP(
        n_features=len(config["mean"]),
        hidden=config["hidden_units"],
        dropout=config["dropout"],
        mean=np.asarray(config["mean"], dtype="float32"),
        std=np.asarray(config["std"], dtype="float32"),
    )


def _load_state(checkpoint: Any) -> dict[str, Any]:
    with checkpoint.as_directory() as directory:
        state: dict[str, Any] = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    return state


def _global_mean(total: torch.Tensor, count: int) -> float:
    """Mean over all workers of a sum (a tensor on the worker's device) and a count."""
    both = torch.stack([total.to(torch.float64), torch.tensor(float(count), dtype=torch.float64, device=total.device)])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(both)
    return float(both[0]) / max(float(both[1]), 1.0)


def _save_checkpoint(directory: str, model: nn.Module, optimizer: torch.optim.Optimizer, history: list[Any]) -> None:
    epoch = int(history[-1]["epoch"])
    state = {
        "epoch": epoch,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": history,
    }
    torch.save(state, Path(directory) / STATE_FILE)
    (Path(directory) / CHECKPOINT_META).write_text(json.dumps({"epoch": epoch, "history": history}))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config["seed"] + rank)
    model = build_model(config)
    start_epoch, resumed_from, history = 0, None, []
    checkpoint = ray.train.get_checkpoint()
    state = _load_state(checkpoint) if checkpoint else None
    if state is not None:
        model.load_state_dict(state["model"])
        resumed_from = int(state["epoch"])
        start_epoch, history = resumed_from + 1, list(state["history"])
    prepared = ray.train.torch.prepare_model(model)  # to the worker's device; DDP when world > 1
    optimizer = torch.optim.Adam(prepared.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    features = torch.from_numpy(np.array(ray.get(config["features"])))  # a writable copy
    labels = torch.from_numpy(np.array(ray.get(config["labels"])))
    generator = torch.Generator().manual_seed(config["seed"])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(features, labels),
        batch_size=config["batch_size"],
        shuffle=True,
        generator=generator,
        pin_memory=bool(config["use_gpu"]) and torch.cuda.is_available(),
    )
    loader = ray.train.torch.prepare_data_loader(loader)  # DistributedSampler + moves batches to the device
    device = ray.train.torch.get_device()
    print(f"rank {rank} of {world} trains on {device} from epoch {start_epoch}", flush=True)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    first_step_at: float | None = None
    for epoch in range(start_epoch, config["epochs"]):
        generator.manual_seed(config["seed"] + epoch)  # one worker: the same order as an unbroken run
        if world > 1:
            loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]  # DistributedSampler: seed + epoch
        prepared.train()
        started, total, count = time.time(), torch.zeros((), device=device), 0
        for x, y in loader:
            if first_step_at is None:
                first_step_at = time.time()
            optimizer.zero_grad()
            loss = loss_fn(prepared(x), y)
            (loss / len(y)).backward()
            optimizer.step()
            total += loss.detach()  # no host sync per step
            count += len(y)
        metrics: dict[str, float] = {
            "epoch": float(epoch),
            "loss": _global_mean(total, count),
            "epoch_seconds": time.time() - started,
            "resumed_from_epoch": float(-1 if resumed_from is None else resumed_from),
        }
        if first_step_at is not None and epoch == start_epoch:
            metrics["first_step_at"] = first_step_at
        history.append(metrics)
        with tempfile.TemporaryDirectory() as directory:
            saved = None
            if rank == 0:
                _save_checkpoint(directory, prepared, optimizer, history)
                saved = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=saved)


def loop_config(hp: Hyperparameters, features: np.ndarray) -> dict[str, Any]:
    """The training loop's settings for `features` (standardization, model and optimizer)."""
    mean, std = standardization(features)
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "hidden_units": list(hp.hidden_units),
        "dropout": hp.dropout,
        "learning_rate": hp.learning_rate,
        "weight_decay": hp.weight_decay,
        "batch_size": hp.batch_size,
        "epochs": hp.epochs,
        "seed": hp.seed,
    }


def fit(
    features: np.ndarray,
    labels: np.ndarray,
    hp: Hyperparameters,
    *,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: int,
    storage_path: str,
    name: str,
    resume: tuple[str, int] | None,
) -> FitResult:
    """Train with a `TorchTrainer`; `resume` is the latest checkpoint found in storage, if any."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    config: dict[str, Any] = {
        **loop_config(hp, features),
        "features": ray.put(np.ascontiguousarray(features, dtype="float32")),
        "labels": ray.put(np.ascontiguousarray(labels, dtype="float32")),
        "use_gpu": gpus_per_worker > 0,
    }
    resources: dict[str, float] = {"CPU": cpus_per_worker}
    if gpus_per_worker > 0:
        resources["GPU"] = gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            storage_path=storage_path,
            name=name,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
        ),
    )
    result = trainer.fit()
    checkpoint = result.checkpoint
    if checkpoint is None and resume is not None:
        checkpoint = ray.train.Checkpoint(resume[0])  # every epoch was already trained
    if checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    state = _load_state(checkpoint)
    model = build_model(config)
    model.load_state_dict(state["model"])
    resumed = resume[1] if resume is not None else None
    last = result.metrics or {}  # Ray restores the last report of an earlier attempt when none is new
    if last.get("epoch", -1) > (resume[1] if resume is not None else -1):
        reported = last.get("resumed_from_epoch", -1)  # the checkpoint the workers actually resumed from
        resumed = int(reported) if reported is not None and reported >= 0 else None
    return FitResult(
        model=model.eval(), epoch=int(state["epoch"]), resumed_from_epoch=resumed, history=state["history"]
    )
