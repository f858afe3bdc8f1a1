"""Event handlers try again through what a restarting API server answers, and only that."""

from __future__ import annotations

from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from slipway.handlers.retries import outlasting_restarts, passing


def flaky(*errors: BaseException) -> Any:
    """A handler that fails with `errors` in turn, then returns its kwargs; counts its calls."""
    left = list(errors)

    def handler(**kwargs: Any) -> Any:
        handler.calls += 1  # type: ignore[attr-defined]
        if left:
            raise left.pop(0)
        return kwargs

    handler.calls = 0  # type: ignore[attr-defined]
    return handler


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ApiException(status=403), True),  # its authorizer not yet loaded
        (ApiException(status=503), True),
        (ApiException(status=429), True),
        (urllib3.exceptions.ProtocolError("Connection aborted."), True),
        (urllib3.exceptions.MaxRetryError(None, "/", None), True),  # type: ignore[arg-type]
        (ApiException(status=404), False),  # an answer about our call
        (ApiException(status=409), False),
        (ApiException(status=422), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_passes(error: BaseException, expected: bool) -> None:
    assert passing(error) is expected


def test_the_same_event_is_handled_again_until_it_goes_through() -> None:
    handler = flaky(ApiException(status=403), urllib3.exceptions.ProtocolError("cut off"))
    assert outlasting_restarts(handler)(type="MODIFIED", name="r") == {"type": "MODIFIED", "name": "r"}
    assert handler.calls == 3


def test_an_answer_about_the_call_fails_at_once() -> None:
    handler = flaky(ApiException(status=422))
    with pytest.raises(ApiException):
        outlasting_restarts(handler)()
    assert handler.calls == 1


def test_patience_runs_out() -> None:
    handler = flaky(*[ApiException(status=503)] * 10)
    with pytest.raises(ApiException):
        outlasting_restarts(handler, patience=1.0)()
    assert handler.calls == 2  # 0.5 s, then the next wait (1 s) would pass the deadline
