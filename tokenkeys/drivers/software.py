"""Software keystore (`soft:DIR`): the fallback when no device is present.

The directory holds one `keystore.json` and, per key, `<id>.key.json` and
`<id>.crt.pem`. Version 2 (docs/drivers.md): `keystore.json` holds a random
master key sealed (AES-256-GCM) under a key derived from the PIN by Argon2id,
with the KDF parameters stored in the file so that they can rise later; each
private key (PKCS#8 DER) is sealed under HKDF(master, key id). One derivation
(about 0.5 s) per login, whatever the number of keys. The sealing itself is in
software_sealing; this module is the Token over the directory.

Version 1 keystores (scrypt per key, PIN verifier) keep opening; the next PIN
change upgrades them. The software keystore has no try counter, so a new PIN
must resist offline guessing: see check_pin_strength.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys import keyalg
from tokenkeys.drivers.base import (
    SOFTWARE,
    DeviceFacts,
    KeyHandle,
    PublicKey,
    Token,
    lookup_terms,
    the_one,
)
from tokenkeys.drivers.capabilities import TransportKey, WrappedKey
from tokenkeys.drivers.software_sealing import (
    FORMAT,
    FORMAT_V2,
    SCRYPT,
    check_pin_strength,
    open_master,
    seal_key,
    seal_key_v1,
    seal_master,
    unseal_key,
)
from tokenkeys.errors import (
    DeviceError,
    KeyExists,
    KeyNotFound,
    NotExtractable,
    TokenNotFound,
    UsageError,
)
from tokenkeys.files import write_atomic
from tokenkeys.i18n import _
from tokenkeys.types import KeySpec, KeyType, PinSource, Secret, TokenInfo
from tokenkeys.uri import SoftUri

# Argon2id (RFC 9106) sized to ~0.5 s on the reference 2-core VM (docs/drivers.md);
# stored per file, so raising these upgrades keystores at their next PIN change.
ARGON2ID = {"name": "argon2id", "iterations": 3, "lanes": 1, "memory_cost": 128 * 1024}
MECHANISMS = frozenset(
    {"RSA_PKCS", "RSA_PKCS_OAEP", "RSA_X_509", "SHA256_RSA_PKCS", "ECDSA", "ECDH1_DERIVE"}
)
# Keys in files, every operation in software: the sizes tokenkeys makes, any OAEP hash.
FACTS = DeviceFacts(SOFTWARE, MECHANISMS, {t: (min(bits), max(bits)) for t, bits in (
    (t, [a.bits for a in keyalg.ALGORITHMS.values() if a.key_type is t]) for t in KeyType)},
    wraps=True, in_software=True)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
__all__ = ["ARGON2ID", "FACTS", "FORMAT", "FORMAT_V2", "MECHANISMS", "SCRYPT",
           "PrivateKey", "SoftwareKeyHandle", "SoftwareToken", "check_pin_strength"]


class SoftwareKeyHandle(KeyHandle):
    def __init__(self, token: SoftwareToken, record: dict[str, Any], path: Path) -> None:
        self._token = token
        self._record = record
        self._path = path
        self._private: PrivateKey | None = None
        self.id = bytes.fromhex(record["id"])
        self.label = record["label"]
        self.extractable = bool(record["extractable"])
        public = serialization.load_pem_public_key(record["public_key"].encode("ascii"))
        if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise DeviceError(_("{path}: unsupported public key type").format(path=path))
        self.public_key = public
        cert_path = path.with_name(f"{record['id']}.crt.pem")
        self.certificate = (
            x509.load_pem_x509_certificate(cert_path.read_bytes()) if cert_path.exists() else None
        )

    @property
    def uri(self) -> str:
        return str(SoftUri(str(self._token.directory), self.label))

    def private_key(self) -> PrivateKey:
        """Decrypt the private key with the logged-in PIN (once). Requires login."""
        if self._private is None:
            rec = self._record
            if rec["format"] == FORMAT_V2:
                der = unseal_key(rec, master=self._token.require_master())
            else:
                der = unseal_key(rec, pin=self._token.require_pin())
            loaded = serialization.load_der_private_key(der, password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise DeviceError(_("{path}: unsupported private key type")
                                  .format(path=self._path))
            self._private = loaded
        return self._private

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        key = self.private_key()
        if not isinstance(key, rsa.RSAPrivateKey):
            raise UsageError(_("key {label!r} is not an RSA key").format(label=self.label))
        return key.decrypt(ciphertext, padding)

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        key = self.private_key()
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), algorithm)
        return key.sign(data, ec.ECDSA(algorithm))

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        key = self.private_key()
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(_("key {label!r} is not an EC key").format(label=self.label))
        return key.exchange(ec.ECDH(), peer_public)


class SoftwareToken(Token):
    """A directory of PIN-encrypted keys with the Token contract."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.uri = str(SoftUri(str(directory)))
        self._pin: Secret | None = None
        self._master: bytes | None = None
        meta = directory / "keystore.json"
        if not meta.is_file():
            raise TokenNotFound(
                _("no software keystore at {directory} (create it with: tokenkeys token init "
                  "--token soft:{directory} --label LABEL)").format(directory=directory)
            )
        self._meta = json.loads(meta.read_text(encoding="utf-8"))

    @classmethod
    def open(cls, uri: SoftUri) -> SoftwareToken:
        return cls(Path(uri.directory).expanduser().resolve())

    @staticmethod
    def init(directory: Path, label: str, pin: Secret) -> TokenInfo:
        """Create an empty keystore whose PIN is `pin`. Refuses to overwrite one."""
        directory = directory.expanduser().resolve()
        meta = directory / "keystore.json"
        if meta.exists():
            raise KeyExists(_("a software keystore already exists at {directory}")
                            .format(directory=directory))
        check_pin_strength(pin)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = {"format": FORMAT_V2, "label": label,
                  **seal_master(pin, secrets.token_bytes(32), ARGON2ID)}
        write_atomic(meta, json.dumps(record, indent=2).encode(), mode=0o600, overwrite=False)
        return SoftwareToken(directory).info()

    def close(self) -> None:
        self._pin = None
        self._master = None

    def info(self) -> TokenInfo:
        return TokenInfo(
            label=str(self._meta["label"]), manufacturer="tokenkeys", model=_("software keystore"),
            serial=hashlib.sha256(str(self.directory).encode()).hexdigest()[:16],
            module="(software)", slot=0, flags=("login-required", "token-initialized"),
            uri=self.uri,
        )

    def login(self, pin_source: PinSource) -> None:
        pin = pin_source.read()
        if pin is None:
            raise UsageError(_("the software keystore has no PIN pad"))
        self._master = open_master(self._meta, pin)
        self._pin = pin

    def require_master(self) -> bytes:
        if self._master is None:
            raise UsageError(_("log in to the software keystore first"))
        return self._master

    def change_pin(self, new_pin: Secret) -> None:
        """Set a new PIN (requires login). Re-seals the master key with the current
        Argon2id parameters; a version 1 keystore is upgraded to version 2 first,
        one step at a time, so that a crash at any point leaves it openable."""
        check_pin_strength(new_pin)
        old_pin = self.require_pin()
        if self._master is None:
            master = secrets.token_bytes(32)
            # 1. version 2 metadata under the OLD PIN: version 1 keys still open with it.
            self._write_meta({"format": FORMAT_V2, "label": self._meta["label"],
                              **seal_master(old_pin, master, ARGON2ID)})
            self._master = master
            # 2. each version 1 key re-sealed under the master key.
            for handle in self.list_keys():
                assert isinstance(handle, SoftwareKeyHandle)
                if handle._record["format"] == FORMAT:
                    der = handle.private_key().private_bytes(
                        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption())
                    record = seal_key(master, handle._record, der)
                    write_atomic(handle._path, json.dumps(record, indent=2).encode(),
                                 mode=0o600)
        # 3. the master key under the new PIN.
        self._write_meta({"format": FORMAT_V2, "label": self._meta["label"],
                          **seal_master(new_pin, self.require_master(), ARGON2ID)})
        self._pin = new_pin

    def _write_meta(self, record: dict[str, Any]) -> None:
        write_atomic(self.directory / "keystore.json", json.dumps(record, indent=2).encode(),
                     mode=0o600)
        self._meta = record

    def require_pin(self) -> Secret:
        if self._pin is None:
            raise UsageError(_("log in to the software keystore first"))
        return self._pin

    def _records(self) -> list[tuple[Path, dict[str, Any]]]:
        out = []
        for path in sorted(self.directory.glob("*.key.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("format") in (FORMAT, FORMAT_V2):
                out.append((path, record))
        return out

    def generate_keypair(self, spec: KeySpec) -> KeyHandle:
        self.require_pin()
        if any(rec["label"] == spec.label for _, rec in self._records()):
            raise KeyExists(_("a key named {label!r} already exists in {uri}")
                            .format(label=spec.label, uri=self.uri))
        alg = keyalg.info(spec.algorithm)
        private: PrivateKey
        if alg.curve is None:
            private = rsa.generate_private_key(65537, alg.bits)
        else:
            private = ec.generate_private_key(alg.curve.curve())
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self.store_key(der, private.public_key(), label=spec.label,
                              algorithm=spec.algorithm.value, extractable=spec.shareable)

    def store_key(self, der: bytes | bytearray, public: PublicKey, *, label: str,
                  algorithm: str, extractable: bool, overwrite: bool = True,
                  ) -> SoftwareKeyHandle:
        """Seal PKCS#8 `der` as this keystore seals its keys, and write it (0600,
        atomically). Requires login."""
        pin = self.require_pin()
        key_id = keyalg.key_id(public)
        record: dict[str, Any] = {
            "format": FORMAT, "id": key_id.hex(), "label": label,
            "algorithm": algorithm, "extractable": extractable,
            "public_key": public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode("ascii"),
        }
        if self._master is not None:
            record = seal_key(self._master, record, bytes(der))
        else:  # a version 1 keystore not yet upgraded: its keys stay version 1
            record = seal_key_v1(pin, record, bytes(der))
        path = self.directory / f"{key_id.hex()}.key.json"
        write_atomic(path, json.dumps(record, indent=2).encode(), mode=0o600,
                     overwrite=overwrite)
        return SoftwareKeyHandle(self, record, path)

    def find_key(self, *, label: str | None = None, key_id: bytes | None = None) -> KeyHandle:
        _terms, what = lookup_terms(label, key_id)
        found = [
            (path, rec) for path, rec in self._records()
            if (label is None or rec["label"] == label)
            and (key_id is None or rec["id"] == key_id.hex())
        ]
        path, record = the_one(found, what, self.uri)
        return SoftwareKeyHandle(self, record, path)

    def list_keys(self) -> list[KeyHandle]:
        return [SoftwareKeyHandle(self, rec, path) for path, rec in self._records()]

    def store_certificate(self, key: KeyHandle, certificate: x509.Certificate,
                          chain: Sequence[x509.Certificate] = ()) -> None:
        """CertificateStore: `<id>.crt.pem`, and the issuers in `<id>.chain.pem`."""
        if not keyalg.same_key(certificate.public_key(), key.public_key):
            raise UsageError(_("the certificate is not for key {label!r}").format(label=key.label))
        stem = self.directory / key.id.hex()
        pem = serialization.Encoding.PEM
        chain_path = stem.with_name(f"{stem.name}.chain.pem")
        if chain:
            write_atomic(chain_path, b"".join(c.public_bytes(pem) for c in chain))
        else:
            chain_path.unlink(missing_ok=True)
        write_atomic(stem.with_name(f"{stem.name}.crt.pem"), certificate.public_bytes(pem))
        key.certificate = certificate

    def certificate_chain(self, key: KeyHandle) -> list[x509.Certificate]:
        path = self.directory / f"{key.id.hex()}.chain.pem"
        return x509.load_pem_x509_certificates(path.read_bytes()) if path.exists() else []

    def set_label(self, key: KeyHandle, label: str) -> None:
        """Rename a key (the designation), atomically."""
        path = self.directory / f"{key.id.hex()}.key.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        record["label"] = label
        write_atomic(path, json.dumps(record, indent=2).encode(), mode=0o600)
        key.label = label

    def delete(self, key: KeyHandle) -> None:
        self.require_pin()
        stem = key.id.hex()
        key_path = self.directory / f"{stem}.key.json"
        if not key_path.exists():
            raise KeyNotFound(_("no key {label!r} in {uri}").format(label=key.label, uri=self.uri))
        (self.directory / f"{stem}.crt.pem").unlink(missing_ok=True)
        (self.directory / f"{stem}.chain.pem").unlink(missing_ok=True)
        key_path.unlink()

    def mechanisms(self) -> frozenset[str]:
        return MECHANISMS

    def facts(self) -> DeviceFacts:
        return FACTS

    # Sharing (KeyExport, KeyImport, KeyTransport): tokenkeys.drivers.software_share.

    def shareable_private_key(self, key: KeyHandle) -> PrivateKey:
        """The private key of a shareable key, for software_share; NotExtractable for
        any other. Requires login."""
        handle = self.find_key(key_id=key.id)
        assert isinstance(handle, SoftwareKeyHandle)
        if not handle.extractable:
            raise NotExtractable(key.label)
        return handle.private_key()

    def export_private_key(self, key: KeyHandle) -> bytearray:
        """PKCS#8 DER of a shareable key; PolicyRefused otherwise. Requires login."""
        from tokenkeys.drivers import software_share

        return software_share.export_private_key(self, key)

    def import_private_key(
        self, pkcs8: bytes | bytearray, *, label: str, shareable: bool,
    ) -> KeyHandle:
        """Store a PKCS#8 key sealed under the PIN. Raises KeyExists. Requires login."""
        from tokenkeys.drivers import software_share

        return software_share.import_private_key(self, pkcs8, label=label, shareable=shareable)

    def create_transport_key(self) -> TransportKey:
        from tokenkeys.drivers import software_share

        return software_share.create_transport_key()

    def wrap_for_transport(self, key: KeyHandle, transport: rsa.RSAPublicKey) -> WrappedKey:
        from tokenkeys.drivers import software_share

        return software_share.wrap_for_transport(self, key, transport)

    def unwrap_transported(
        self, transport: TransportKey, wrapped: WrappedKey, *, label: str, shareable: bool,
    ) -> KeyHandle:
        from tokenkeys.drivers import software_share

        return software_share.unwrap_transported(
            self, transport, wrapped, label=label, shareable=shareable)

    def destroy_transport_key(self, transport: TransportKey) -> None:
        """The transport key lived only in memory: nothing to destroy on disk."""
