"""Event handlers that outlast an API server restart.

Kopf never retries an event handler: one that fails drops its event, and nothing looks at the
object again until it changes. A restarting API server fails calls for seconds in ways that are
over by themselves: connections refused (waited out in the client, `kube.client.OUTAGE_RETRIES`),
a request cut off, and, measured in the chaos suite, 403 Forbidden for 2-4 s while its
authorizer loads the RBAC rules. A RayJob's "SUCCEEDED" lost that way left its TrainingRun
Pending for good. So an event handler tries again while the failure is one of those, for
`PATIENCE_S`, then fails as before (logged by Kopf).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from kubernetes.client.exceptions import ApiException

# What a restarting or overloaded API server answers for a while (403: its authorizer not yet loaded).
PASSING_STATUSES = frozenset({403, 429, 500, 502, 503, 504})
PATIENCE_S = 30.0
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 4.0

log = logging.getLogger("slipway.handlers.retries")
F = TypeVar("F", bound=Callable[..., Any])


def passing(error: BaseException) -> bool:
    """Whether `error` is what an API server gives while it restarts, not an answer about our call."""
    if isinstance(error, ApiException):
        return error.status in PASSING_STATUSES
    return isinstance(error, urllib3.exceptions.HTTPError)


def outlasting_restarts(handler: F, patience: float = PATIENCE_S) -> F:
    """`handler`, called again with the same event while it fails with a `passing` error."""

    @functools.wraps(handler)
    def patient(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + patience
        delay = FIRST_DELAY_S
        while True:
            try:
                return handler(*args, **kwargs)
            except Exception as error:
                if not passing(error) or time.monotonic() + delay > deadline:
                    raise
                what = getattr(error, "status", None) or type(error).__name__
                log.warning("%s failed (%s); trying again in %.1fs", handler.__name__, what, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)

    return patient  # type: ignore[return-value]
