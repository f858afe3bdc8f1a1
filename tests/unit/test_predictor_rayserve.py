"""The ray-serve engine's pure pieces: Ray and Serve options from the settings, the replicas' batch
function, the front's concurrent batches. (Ray itself runs in tests/integration/test_predictor_rayserve.py.)"""

from __future__ import annotations

import asyncio
import io
import itertools
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from pipelines.churn import model as churn
from pipelines.predictor import rayserve
from pipelines.predictor.batcher import Batcher
from pipelines.predictor.instances import Instances, Key
from pipelines.predictor.metrics import ModelMetrics
from pipelines.predictor.scorer import BatchScorer, Computed, LocalCompute
from pipelines.predictor.settings import RaySettings, Settings
from prometheus_client import REGISTRY

from tests.unit.models import Poisoned

N_FEATURES = 3
_models = itertools.count()


def settings(**ray: float | int | None) -> Settings:
    return Settings(model_name="churn", revision="1", model_dir="/r", ray=RaySettings(**ray))  # type: ignore[arg-type]


def test_fixed_replicas_become_num_replicas() -> None:
    options = rayserve.deployment_options(settings(replicas=3, cpus_per_replica=0.5))
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 0.5}  # no GPU asked, none reserved
    assert options["max_ongoing_requests"] >= 64  # room for a full @serve.batch
    assert options["logging_config"] == {"enable_access_log": False}


def test_autoscaling_bounds_become_serves_autoscaling_config() -> None:
    options = rayserve.deployment_options(settings(min_replicas=2, max_replicas=6, gpus_per_replica=0.5))
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 2,
        "initial_replicas": 2,
        "max_replicas": 6,
        "target_ongoing_requests": rayserve.IN_FLIGHT_PER_REPLICA,
    }
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert rayserve.device_for(RaySettings(gpus_per_replica=0.5)) == "cuda"
    assert rayserve.device_for(RaySettings()) == "cpu"


def test_ray_init_holds_exactly_the_most_replicas_resources() -> None:
    options = rayserve.init_options(RaySettings(min_replicas=1, max_replicas=3, cpus_per_replica=0.5), "/tmp/x", 0)
    assert options["address"] == "local"  # never RAY_ADDRESS's cluster
    assert (options["num_cpus"], options["num_gpus"]) == (2, 0)  # 3 x 0.5, rounded up
    assert options["include_dashboard"] is False and options["_temp_dir"] == "/tmp/x"
    assert options["object_store_memory"] == rayserve.OBJECT_STORE_BYTES < 100 * 1024 * 1024
    assert rayserve.init_options(RaySettings(replicas=2, cpus_per_replica=2), "/t", 1)["num_cpus"] == 4


@pytest.mark.parametrize(
    ("ray", "gpus"),
    [
        (RaySettings(replicas=4), 0),
        (RaySettings(replicas=2, gpus_per_replica=1), 2),
        (RaySettings(replicas=3, gpus_per_replica=0.5), 2),  # two halves share a GPU; the third needs another
        (RaySettings(replicas=3, gpus_per_replica=0.3), 1),  # three 0.3s fit on one
        (RaySettings(min_replicas=1, max_replicas=2, gpus_per_replica=2), 4),
    ],
)
def test_gpus_needed(ray: RaySettings, gpus: int) -> None:
    assert rayserve.gpus_needed(ray) == gpus


def compute() -> LocalCompute:
    torch.manual_seed(0)
    net = churn.ChurnMLP(N_FEATURES, hidden=(8,)).eval()
    inner = torch.jit.load(io.BytesIO(churn.torchscript_bytes(net)))  # type: ignore[no-untyped-call]
    return LocalCompute(torch.jit.script(Poisoned(inner)), N_FEATURES)


def rows(*values: Sequence[float], read_only: bool = True) -> Instances:
    array = np.array(values, dtype=np.float32)
    array.flags.writeable = not read_only  # read-only: as Ray hands arguments to a replica
    return Instances(array, (None,) * len(values))


def test_one_forward_for_several_calls_and_a_failing_call_fails_alone() -> None:
    local = compute()
    a, b, c = rows([1, 2, 3], [np.nan, 5, 6]), rows([1, 2e7, 3]), rows([7, 8, 9])
    assert rayserve.batch_rows([a, b, c]) == 4  # @serve.batch counts rows
    together = asyncio.run(rayserve.score_together(local, [a, c]))
    assert [len(r.probabilities) for r in together if isinstance(r, Computed)] == [2, 1]
    alone = [asyncio.run(rayserve.score_together(local, [x]))[0] for x in (a, c)]
    for merged, single in zip(together, alone, strict=True):
        assert isinstance(merged, Computed) and isinstance(single, Computed)
        np.testing.assert_allclose(merged.probabilities, single.probabilities, rtol=1e-6)
    assert isinstance(together[0], Computed) and together[0].missing.tolist() == [0, 1]
    results = asyncio.run(rayserve.score_together(local, [a, b, c]))
    assert [type(r).__name__ for r in results] == ["Computed", "Error", "Computed"]
    assert "poisoned input" in str(results[1])


class Remote:
    """A Compute in the front's role: the rows go elsewhere and come back later (here: after a delay)."""

    def __init__(self) -> None:
        self.local = compute()
        self.calls: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, values: np.ndarray, keys: Sequence[Key | None]) -> Computed:
        self.calls.append(len(values))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            return await self.local(values, keys)
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        self.local.close()


def sample(metric: str, model: str) -> float:
    value = REGISTRY.get_sample_value(metric, {"model": model, "revision": "1"})
    return 0.0 if value is None else value


def test_the_front_keeps_several_batches_in_flight_and_counts_every_prediction() -> None:
    remote = Remote()
    name = f"rayserve-unit-{next(_models)}"
    scorer = BatchScorer(remote, N_FEATURES, ModelMetrics(name, "1"), max_batch_size=4, max_concurrent=2)
    requests = [rows([i, i + 1, np.nan], read_only=False) for i in range(12)]

    async def all_at_once() -> list[np.ndarray]:
        results = await asyncio.gather(*(scorer.score(r) for r in requests))
        await scorer.batcher.close()
        return results

    got = asyncio.run(all_at_once())
    assert remote.most_in_flight == 2 and max(remote.calls) == 4 and sum(remote.calls) == 12
    expected = [asyncio.run(remote.local(r.values, r.keys)).probabilities for r in requests]
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(expected), rtol=1e-6)
    assert sample("slipway_predictions_total", name) == 12
    assert sample("slipway_features_missing_total", name) == 12


def test_one_batch_at_a_time_unless_asked() -> None:
    in_flight, most = 0, 0

    async def run(items: Sequence[int]) -> list[int]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return list(items)

    async def go(limit: int) -> int:
        nonlocal most
        most = 0
        batcher: Batcher[int, int] = Batcher(run, max_batch_size=1, max_wait=0, max_concurrent=limit)
        assert await asyncio.gather(*(batcher.submit(i) for i in range(6))) == list(range(6))
        await batcher.close()
        return most

    assert asyncio.run(go(1)) == 1
    assert asyncio.run(go(3)) == 3
    with pytest.raises(ValueError, match="max_concurrent"):
        Batcher(run, max_concurrent=0)


def test_ray_processes_start_in_their_own_process_group_and_the_agent_port_is_free() -> None:
    from ray._private import parameter, services

    probe = [sys.executable, "-c", "import os; print(os.getpgrp() == os.getpid())"]
    with rayserve._private_ray_processes():
        assert parameter.RayParams().dashboard_agent_listen_port == 0
        assert parameter.RayParams(dashboard_agent_listen_port=5).dashboard_agent_listen_port == 5
        inside = services.ConsolePopen(probe, stdout=subprocess.PIPE)
        assert inside.communicate(timeout=30)[0].strip() == b"True"
    assert parameter.RayParams().dashboard_agent_listen_port == 52365  # Ray's own default again
    outside = services.ConsolePopen(probe, stdout=subprocess.PIPE)
    assert outside.communicate(timeout=30)[0].strip() == b"False"
