"""Reading run artifacts (manifest, validation report, failure file) wherever they live, through fsspec."""

from __future__ import annotations

import json
from typing import Any, Generic, NamedTuple, TypeVar

import fsspec
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class Read(NamedTuple, Generic[M]):
    value: M | None
    problem: str  # why value is None: missing, unreadable (no driver, no access) or malformed


def read_model(uri: str, model: type[M]) -> Read[M]:
    """The JSON document at `uri` parsed as `model`, or why it could not be read.

    Never raises: an artifact the operator cannot read becomes a reason on the run, not a crash.
    """
    try:
        with fsspec.open(uri, "r") as handle:
            data: Any = json.load(handle)
    except FileNotFoundError:
        return Read(None, f"{uri} does not exist")
    except (ImportError, OSError, ValueError) as error:  # no fsspec driver, no access, bad JSON
        return Read(None, f"{uri} could not be read: {error}")
    try:
        return Read(model.model_validate(data), "")
    except ValidationError as error:
        return Read(None, f"{uri} is not a valid {model.__name__}: {error.error_count()} problems")
