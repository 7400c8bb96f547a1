"""Each rule moved below the CLI refuses through the library exactly as through the CLI:
the same error class, the same message, nothing written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.conftest import TK
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
