"""What the user must fix, told apart from what time may fix.

Each failure a retry would repeat is a `UserError` with its own exit code (the contract in
slipway.api.artifacts), the spec field to fix and that field's value. The entrypoint writes it as
failure.json in the run's directory and exits with its code; the operator fails the run at once
with the reason of the same name. Anything else (an exception nobody foresaw, a lost worker, a
network error) ends the entrypoint with exit code 1, and the operator retries it.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence
from typing import ClassVar

from slipway.api.artifacts import (
    EXIT_ARTIFACTS_UNWRITABLE,
    EXIT_COLUMN_NOT_FOUND,
    EXIT_DATA_VALIDATION,
    EXIT_DATASET_NOT_FOUND,
    EXIT_FEATURE_SERVICE_NOT_FOUND,
    EXIT_INVALID_HYPERPARAMETER,
    FAILURE_FILE,
    FAILURE_REASONS,
    RunFailure,
    ValidationReport,
)

from . import storage

log = logging.getLogger(__name__)

# OSError numbers that say a location is wrong (or refused), not that the storage is having a
# bad moment: a retry would meet them again.
PERMANENT_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS, errno.EINVAL}
)
SHOWN = 12  # names listed in a message (columns, feature services) before "..."


class UserError(Exception):
    """A failure only a change to the TrainingRun fixes."""

    exit_code: ClassVar[int]

    def __init__(self, field: str, value: object, detail: str) -> None:
        self.field, self.value, self.detail = field, str(value), detail
        super().__init__(self.line())

    @property
    def reason(self) -> str:
        return FAILURE_REASONS[self.exit_code]

    def line(self) -> str:
        return f'{self.reason}: {self.field} "{self.value}": {self.detail}'

    def failure(self, attempt: int) -> RunFailure:
        return RunFailure(
            reason=self.reason,
            exit_code=self.exit_code,
            field=self.field,
            value=self.value,
            detail=self.detail,
            attempt=attempt,
        )


class FeatureServiceNotFound(UserError):
    exit_code = EXIT_FEATURE_SERVICE_NOT_FOUND


class DatasetNotFound(UserError):
    exit_code = EXIT_DATASET_NOT_FOUND


class ColumnNotFound(UserError):
    exit_code = EXIT_COLUMN_NOT_FOUND


class InvalidHyperparameter(UserError):
    exit_code = EXIT_INVALID_HYPERPARAMETER


class ArtifactsUnwritable(UserError):
    exit_code = EXIT_ARTIFACTS_UNWRITABLE


class DataValidationFailed(UserError):
    exit_code = EXIT_DATA_VALIDATION

    def __init__(self, field: str, value: object, report: ValidationReport) -> None:
        super().__init__(field, value, report.reason or "the data failed validation")
        self.report = report


def listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "") if names else "none"


def permanent(error: BaseException) -> bool:
    """Whether a storage error names a wrong location (or a refused one) rather than a passing fault.

    FileNotFoundError and PermissionError are OSErrors with those numbers; fsspec raises
    ValueError or ImportError for a protocol it does not know or has no driver for."""
    if isinstance(error, OSError):
        return error.errno in PERMANENT_ERRNOS or isinstance(error, FileNotFoundError | PermissionError)
    return isinstance(error, ValueError | ImportError)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def conclude(error: UserError, directory: str, attempt: int, file: str = FAILURE_FILE) -> int:
    """Reports a user error and returns its exit code: the traceback, `file` (failure.json) in
    `directory` (unless the location is the problem), and last the one line that Ray's message
    about the job, and so the RayJob's, ends with."""
    log.info("traceback of the failure below", exc_info=error)
    if not isinstance(error, ArtifactsUnwritable):
        target = storage.join(directory, file)
        try:
            storage.write_text(target, error.failure(attempt).model_dump_json(by_alias=True, indent=2))
        except Exception:  # the exit code still says which failure it was
            log.warning("could not write %s", target, exc_info=True)
    log.error("%s", error.line())
    return error.exit_code


def prepare_directory(directory: str, stale: Sequence[str], field: str, value: str) -> None:
    """Fails fast (ArtifactsUnwritable naming `field`) when `directory` cannot be written, and
    removes the files in it that an earlier attempt left and this one writes afresh (`stale`)."""
    try:
        storage.check_writable(directory)
        for name in stale:
            storage.remove(storage.join(directory, name))
    except (OSError, ValueError, ImportError) as error:
        if not permanent(error):
            raise
        raise ArtifactsUnwritable(field, value, f"cannot be written: {first_line(error)}") from error
