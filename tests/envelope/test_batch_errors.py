"""Batch results carry error classes by name (they cross process boundaries): one
lookup (opening_batch.error_class) gives the CLI's exit code and the parent's re-raised error."""

from __future__ import annotations

from tokenkeys import errors
from tokenkeys.services import opening_batch, opening_workers


def test_error_class_by_name() -> None:
    assert opening_batch.error_class("PinIncorrect") is errors.PinIncorrect
    assert opening_batch.error_class("OutputExists").exit_code == 10
    assert opening_batch.error_class(None) is errors.TokenKeysError
    assert opening_batch.error_class("Path") is errors.TokenKeysError  # not an error class


def test_worker_device_failure_keeps_its_class() -> None:
    # A PinError subclass (one of the device failures that stop a batch) keeps its
    # class and exit code; it used to come back as DeviceError.
    exc = opening_workers.device_failure("PinIncorrect", "wrong PIN")
    assert type(exc) is errors.PinIncorrect and str(exc) == "wrong PIN"
    assert type(opening_workers.device_failure("CopyFailed", "m")) is errors.CopyFailed
    assert type(opening_workers.device_failure("EnvelopeMalformed", "m")) is errors.DeviceError
