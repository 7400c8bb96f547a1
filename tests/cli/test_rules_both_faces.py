"""Each rule moved below the CLI refuses through the library exactly as through the CLI:
the same error class, the same message, nothing written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.conftest import TK
from tests.cli.share_support import PASSPHRASE, PIN, signature_only_p12, soft_store
from tokenkeys.config import Config
from tokenkeys.errors import PolicyRefused, TokenKeysError
from tokenkeys.services import sealing


def _certificate(path: Path, *, start: datetime, days: int) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ancien")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=days))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _refusal(fn: object) -> TokenKeysError:
    with pytest.raises(TokenKeysError) as caught:
        fn()  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize("when", ["expired", "not yet valid"])
def test_seal_validity_is_the_library_s_rule(tk: TK, tmp_path: Path, when: str) -> None:
    now = datetime.now(UTC)
    start = now - timedelta(days=40) if when == "expired" else now + timedelta(days=5)
    cert = _certificate(tmp_path / "r.pem", start=start, days=10)
    bid = tmp_path / "bid.txt"
    bid.write_bytes(b"offre")
    refused = _refusal(lambda: sealing.seal_file(Config(), bid, tmp_path / "lib.p7m",
                                                 certificates=[cert]))
    assert isinstance(refused, PolicyRefused) and "is not valid now" in str(refused)
    cli = tk("seal", bid, "-o", tmp_path / "cli.p7m", "--recipient", cert)
    assert cli.code == PolicyRefused.exit_code
    assert cli.err.strip() == f"tokenkeys: error: {refused}"
    assert not (tmp_path / "lib.p7m").exists() and not (tmp_path / "cli.p7m").exists()
    sealing.seal_file(Config(), bid, tmp_path / "lib.p7m", certificates=[cert],
                      allow_expired=True)
    assert (tmp_path / "lib.p7m").stat().st_size > 0


def _soft_open(uri: str) -> Any:
    from tokenkeys.drivers import open_token
    from tokenkeys.types import Secret, given_pin

    @contextlib.contextmanager
    def opened() -> Iterator[Any]:
        with open_token(uri, Config()) as token:
            token.login(given_pin(Secret(PIN)))
            yield token
    return opened


@pytest.mark.parametrize("case", ["unknown service", "name taken"])
def test_key_generation_refuses_through_the_library_as_through_the_cli(
        tk: TK, tmp_path: Path, case: str) -> None:
    from tokenkeys.registry import Registry
    from tokenkeys.services import key_inventory
    from tokenkeys.types import Algorithm

    uri = soft_store(tmp_path / "ks")
    registry = tmp_path / "registry.sqlite"
    with Registry.open(str(registry)) as reg:
        if case == "name taken":
            key_inventory.generate(reg, "default", _soft_open(uri), "K",
                                   algorithm=Algorithm.EC_P256)
        service = "nope" if case == "unknown service" else "default"
        refused = _refusal(lambda: key_inventory.generate(
            reg, service, _soft_open(uri), "K", algorithm=Algorithm.EC_P256))
    cli = tk("key", "generate", "--token", uri, "--name", "K", "--algorithm", "ec-p256",
             "--service", service, env={"TOKENKEYS_PIN": PIN,
                                        "TOKENKEYS_REGISTRY": str(registry)})
    assert cli.code == type(refused).exit_code, cli.err
    assert cli.err.strip() == f"tokenkeys: error: {refused}"


def test_share_import_checks_the_certificate_through_the_library_as_through_the_cli(
        tk: TK, tmp_path: Path) -> None:
    from tokenkeys.services import share
    from tokenkeys.types import Secret

    p12 = signature_only_p12(tmp_path / "sig.p12", ec.generate_private_key(ec.SECP256R1()))
    uri = soft_store(tmp_path / "ks")
    with _soft_open(uri)() as token:
        refused = _refusal(lambda: share.import_pkcs12(
            token, p12, lambda: Secret(PASSPHRASE), name="SIG"))
        assert token.list_keys() == []
    cli = tk("share", "import", p12, "--token", uri, "--name", "SIG",
             env={"TOKENKEYS_PIN": PIN, "TOKENKEYS_PASSPHRASE": PASSPHRASE})
    assert cli.code == type(refused).exit_code == 5, cli.err
    assert cli.err.strip() == f"tokenkeys: error: {refused}"
