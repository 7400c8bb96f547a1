"""`doctor` logs in through the login guard, at most once per token and run
(fake port: it counts the logins a real card would count as tries)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.drivers.fakeport import FakeDevice, FakePort
from tests.registry.conftest import soft_facts
from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.drivers.p11 import discovery
from tokenkeys.errors import PinFinalTry, PinIncorrect
from tokenkeys.registry import Registry
from tokenkeys.services.doctor import Logins, TokenReport, check_registry, check_token
from tokenkeys.types import TokenInfo


@pytest.fixture
def device() -> FakeDevice:
    return FakeDevice()


@pytest.fixture
def fake_uri(tmp_path: Path, device: FakeDevice, monkeypatch: pytest.MonkeyPatch) -> str:
    module = tmp_path / "libfake-pkcs11.so"
    module.write_bytes(b"")
    monkeypatch.setitem(discovery._PORTS, (os.path.realpath(module), discovery.PYTHON_PKCS11),
                        FakePort(device, str(module)))
    return f"pkcs11:token={device.label}?module-path={module}"


def _info(uri: str) -> TokenInfo:
    with open_token(uri, Config()) as token:
        return token.info()


def _report(uri: str, logins: Logins) -> TokenReport:
    return check_token(_info(uri), Config(), logins)


def _known(uri: str) -> Logins:
    """Logins of a run that was given this token (--token)."""
    return Logins((_info(uri).uri,))


def _doctor(uri: str, tmp_path: Path) -> tuple[TokenReport, Exception | None]:
    """What `doctor` does for one token that is also a registry token."""
    logins = _known(uri)
    report = _report(uri, logins)
    with Registry.open(str(tmp_path / "registry.sqlite")) as reg:
        if not reg.keys():
            reg.create_service("s")
            reg.add_key("s", dataclasses.replace(soft_facts("K"), token_uri=uri), "adopt")
        try:
            check_registry(reg, lambda u: open_token(u, Config()), logins=logins)
        except PinIncorrect as exc:
            return report, exc
    return report, None


def test_wrong_pin_costs_one_try_per_run(device: FakeDevice, fake_uri: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEYS_PIN", "999999")
    device.login_answer = "CKR_PIN_INCORRECT"
    report, raised = _doctor(fake_uri, tmp_path)
    assert report.error is not None and isinstance(raised, PinIncorrect)
    assert len(device.logins) == 1


def test_final_try_is_never_spent_by_doctor(device: FakeDevice, fake_uri: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEYS_PIN", "999999")
    device.flags |= 0x20000  # CKF_USER_PIN_FINAL_TRY
    report = _report(fake_uri, _known(fake_uri))
    assert "final PIN try" in str(report.error)
    assert device.logins == []
    with Registry.open(str(tmp_path / "registry.sqlite")) as reg:
        reg.create_service("s")
        reg.add_key("s", dataclasses.replace(soft_facts("K"), token_uri=fake_uri), "adopt")
        with pytest.raises(PinFinalTry):
            check_registry(reg, lambda u: open_token(u, Config()))
    assert device.logins == []


def test_empty_pin_is_not_given(device: FakeDevice, fake_uri: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEYS_PIN", "")
    report, raised = _doctor(fake_uri, tmp_path)
    assert raised is None and report.not_valid is None
    assert report.to_json()["keys"] == "set TOKENKEYS_PIN to check key expiry"
    assert report.error is None and device.logins == []


def test_right_pin_checks_keys(device: FakeDevice, fake_uri: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEYS_PIN", device.pin)
    report, raised = _doctor(fake_uri, tmp_path)
    assert raised is None and report.not_valid == () and report.opens == {}


def test_a_token_doctor_does_not_know_gets_no_login(device: FakeDevice, fake_uri: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither given nor named by the registry: somebody else's card. Its public objects
    are listed; TOKENKEYS_PIN is not sent."""
    monkeypatch.setenv("TOKENKEYS_PIN", device.pin)
    report = _report(fake_uri, Logins())
    assert report.error is None and report.not_valid is None and device.logins == []
    assert "not logged in: doctor sends TOKENKEYS_PIN only to" in str(report.to_json()["keys"])


def test_count_low_is_not_spent_by_doctor(device: FakeDevice, fake_uri: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEYS_PIN", device.pin)
    device.flags |= 0x10000  # CKF_USER_PIN_COUNT_LOW
    report = _report(fake_uri, _known(fake_uri))
    assert "reports a low PIN try count" in str(report.error)
    assert device.logins == []
