"""What every e2e module shares: an API client for the module's own dev stack (its `stack` fixture)."""

from __future__ import annotations

import pytest
from kubernetes import client, config

from slipway.devstack.stack import DevStack


@pytest.fixture(scope="module")
def api(stack: DevStack) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(str(stack.kubeconfig)))
