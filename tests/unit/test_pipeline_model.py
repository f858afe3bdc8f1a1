"""The churn MLP: standardization inside the module, NaN imputation and the TorchScript export."""

from __future__ import annotations

import io

import numpy as np
import torch
from pipelines.churn import model as m


def test_standardization_ignores_missing_values_and_constant_columns() -> None:
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]], dtype="float32")
    mean, std = m.standardization(x)
    assert mean.tolist() == [2.0, 5.0, 0.0]
    assert std.tolist() == [1.0, 1.0, 1.0]


def test_missing_values_are_imputed_with_the_training_mean() -> None:
    torch.manual_seed(0)
    net = m.ChurnMLP(3, hidden=(8,), mean=np.array([1, 2, 3], "float32"), std=np.array([2, 2, 2], "float32")).eval()
    with torch.no_grad():
        imputed = net(torch.tensor([[np.nan, 5.0, np.nan]]))
        explicit = net(torch.tensor([[1.0, 5.0, 3.0]]))
    assert torch.allclose(imputed, explicit)


def test_torchscript_takes_raw_features_and_returns_probabilities() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, size=(64, 4)).astype("float32")
    mean, std = m.standardization(x)
    net = m.ChurnMLP(4, hidden=(16, 8), dropout=0.1, mean=mean, std=std).eval()
    scripted = torch.jit.load(io.BytesIO(m.torchscript_bytes(net)))
    with torch.no_grad():
        p = scripted(torch.from_numpy(x)).numpy()
    assert p.shape == (64,) and np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(p, m.predict(net, x), rtol=1e-5, atol=1e-6)
    # float64 and integer inputs are accepted too
    assert scripted(torch.from_numpy(x.astype("float64"))).shape == (64,)


def test_unwrap_returns_the_inner_module() -> None:
    net = m.ChurnMLP(2)
    wrapper = torch.nn.Module()
    wrapper.module = net
    assert m.unwrap(wrapper) is net and m.unwrap(net) is net
    assert m.predict(net, np.zeros((0, 2), "float32")).shape == (0,)
