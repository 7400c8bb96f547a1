"""The pkcs11 driver (python-pkcs11): HSMs and SoftHSM2, the fast path for batch opening.

One session per Token, kept open. python-pkcs11 is not thread-safe on SoftHSM2
(FINDINGS): only one thread may call into a Token at a time. Batch opening
confines every device call to one thread (tokenkeys.device_thread) and
parallelises across devices' cores with processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pkcs11
import PyKCS11
from cryptography import x509
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from tokenkeys.config import Config
from tokenkeys.drivers.base import KeyHandle, Token, lookup_terms, the_one
from tokenkeys.drivers.modules import all_modules, candidate_modules, check_module
from tokenkeys.drivers.pkcs11_keys import (
    P11_KEY_TYPE,
    Pkcs11KeyHandle,
    build_handle,
    certificate_template,
    guard_errors,
    key_id_for,
    key_type_of,
    keygen_templates,
    read_public_key,
)
from tokenkeys.drivers.pkcs11_tables import (
    CKF_PROTECTED_AUTHENTICATION_PATH,
    token_flag_words,
    tries_left,
)
from tokenkeys.errors import (
    DeviceError,
    KeyExists,
    KeyNotFound,
    ModuleNotFound,
    MultipleKeysFound,
    PinLocked,
    PinMissing,
    TokenKeysError,
    TokenNotFound,
    UsageError,
)
from tokenkeys.errors import PinIncorrect as PinIncorrectError
from tokenkeys.types import KeySpec, PinSource, TokenInfo
from tokenkeys.uri import Pkcs11Uri

_LIBS: dict[str, Any] = {}

# python-pkcs11 exception -> (tree class, one-line reason). PINs never reach a message.
ERRORS: dict[type[p11e.PKCS11Error], tuple[type[TokenKeysError], str]] = {
    p11e.NoSuchKey: (KeyNotFound, "no such key"),
    p11e.MultipleObjectsReturned: (MultipleKeysFound, "several objects match"),
    p11e.PinLocked: (PinLocked, ""),
    p11e.UserNotLoggedIn: (PinMissing, ""),
    p11e.DeviceRemoved: (DeviceError, "the device was removed"),
    p11e.TokenNotPresent: (DeviceError, "the token is not present"),
    p11e.SessionHandleInvalid: (DeviceError, "the session was closed"),
    p11e.SessionClosed: (DeviceError, "the session was closed"),
    p11e.TokenWriteProtected: (DeviceError, "the token is write-protected"),
    p11e.DeviceMemory: (DeviceError, "the token is full"),
    p11e.TemplateInconsistent: (DeviceError, "the token refused the object's attributes"),
    p11e.TemplateIncomplete: (DeviceError, "the token refused the object's attributes"),
    p11e.AttributeValueInvalid: (DeviceError, "the token refused an attribute value"),
    p11e.AttributeSensitive: (DeviceError, "the attribute is sensitive"),
    p11e.MechanismInvalid: (DeviceError, "mechanism not supported by the token"),
    p11e.MechanismParamInvalid: (DeviceError, "mechanism parameters refused by the token"),
}


def map_error(exc: p11e.PKCS11Error, what: str) -> TokenKeysError:
    cls, reason = ERRORS.get(type(exc), (DeviceError, ""))
    if cls is PinLocked:
        return PinLocked()
    if cls is PinMissing:
        return PinMissing("user login (call login first)")
    # python-pkcs11 messages are the CKR description only: no data, no PIN.
    reason = reason or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return cls(f"{what}: {reason}")


guard = guard_errors(map_error)


def load_lib(path: str) -> Any:
    """The pkcs11.lib for `path`, loaded once per process.

    Keyed by real path: a symlinked second path would C_Initialize twice and fail.
    """
    check_module(path)
    real = os.path.realpath(path)
    lib = _LIBS.get(real)
    if lib is None:
        try:
            lib = pkcs11.lib(real)
        except (OSError, RuntimeError):
            raise ModuleNotFound(f"PKCS#11 module does not load: {path}") from None
        _LIBS[real] = lib
    return lib


def mechanism_name(code: int) -> str:
    name = PyKCS11.CKM.get(int(code))
    return name[4:] if isinstance(name, str) else f"0x{int(code):08X}"


def _tokens(lib: Any) -> Iterator[Any]:
    for slot in lib.get_slots(token_present=True):
        try:
            token = slot.get_token()
        except p11e.PKCS11Error:
            continue
        if token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
            yield token


def _serial(token: Any) -> str:
    return bytes(token.serial).decode("ascii", "replace").strip()


def token_uri(token: Any, module: str) -> Pkcs11Uri:
    attrs = {"token": token.label, "serial": _serial(token)}
    return Pkcs11Uri(attrs=attrs, query={"module-path": module})


def token_info(token: Any, module: str) -> TokenInfo:
    return TokenInfo(
        label=token.label,
        manufacturer=token.manufacturer_id,
        model=token.model,
        serial=_serial(token),
        module=module,
        slot=int(token.slot.slot_id),
        flags=token_flag_words(int(token.flags)),
        uri=str(token_uri(token, module)),
    )


def _matches(token: Any, uri: Pkcs11Uri) -> bool:
    wanted = {
        "token": token.label,
        "serial": _serial(token),
        "manufacturer": token.manufacturer_id,
        "model": token.model,
        "slot-id": str(token.slot.slot_id),
    }
    return all(uri.attrs[k] == v for k, v in wanted.items() if k in uri.attrs)


def list_tokens(config: Config) -> list[TokenInfo]:
    """Every initialised token of every module; modules that do not load are skipped."""
    found: list[TokenInfo] = []
    for module in all_modules(config):
        try:
            lib = load_lib(module)
            found.extend(token_info(t, module) for t in _tokens(lib))
        except (ModuleNotFound, p11e.PKCS11Error):
            continue
    return found


def _describe(uri: Pkcs11Uri) -> str:
    keys = ("token", "serial", "slot-id", "manufacturer", "model")
    return ";".join(f"{k}={uri.attrs[k]}" for k in keys if k in uri.attrs) or "any token"


class Pkcs11Token(Token):
    """A token reached through python-pkcs11. Requires login for private objects."""

    def __init__(self, lib: Any, module: str, token: Any) -> None:
        self._lib = lib
        self.module = module
        self._token = token
        self._slot = token.slot
        self._base_uri = token_uri(token, module)
        self.uri = str(self._base_uri)
        self._login_session: Any = None
        self._logged_in = False
        self._mechanisms: frozenset[str] | None = None
        try:
            self._session = token.open(rw=True)
        except p11e.TokenWriteProtected:
            # Read-only tokens can still decrypt and sign.
            self._session = guard(lambda: token.open(), f"opening {token.label!r}")
        except p11e.PKCS11Error as exc:
            raise map_error(exc, f"opening {token.label!r}") from None

    @classmethod
    def open(cls, uri: Pkcs11Uri, config: Config) -> Pkcs11Token:
        """Find the token by label, serial or slot-id; it must be unique across modules."""
        modules = candidate_modules(uri, config)
        hits: list[tuple[Any, str, Any]] = []
        seen: list[str] = []
        for module in modules:
            try:
                lib = load_lib(module)
                tokens = list(_tokens(lib))
            except (ModuleNotFound, p11e.PKCS11Error):
                if len(modules) == 1:
                    raise ModuleNotFound(f"PKCS#11 module does not load: {module}") from None
                continue
            seen.extend(f"{t.label!r} ({os.path.basename(module)})" for t in tokens)
            hits.extend((lib, module, t) for t in tokens if _matches(t, uri))
        if not hits:
            existing = ", ".join(seen) or "none"
            raise TokenNotFound(f"no token matches {_describe(uri)} (tokens present: {existing})")
        if len(hits) > 1:
            names = ", ".join(f"{t.label!r} serial {_serial(t)}" for _, _, t in hits)
            raise UsageError(
                f"several tokens match {_describe(uri)} ({names}): add serial= or module-path="
            )
        return cls(*hits[0])

    def close(self) -> None:
        # Closing the logged-in session logs the whole token out (python-pkcs11).
        self._logged_in = False
        for name in ("_session", "_login_session"):
            session = getattr(self, name)
            setattr(self, name, None)
            if session is not None:
                with contextlib.suppress(p11e.PKCS11Error):
                    session.close()

    @property
    def session(self) -> Any:
        if self._session is None:
            raise UsageError(f"token {self._token.label!r} is closed")
        return self._session

    def _fresh_token(self) -> Any:
        return guard(lambda: self._slot.get_token(), "reading token information")

    def info(self) -> TokenInfo:
        return token_info(self._fresh_token(), self.module)

    def login(self, pin_source: PinSource) -> None:
        """C_Login once. The PIN is revealed only for the call; never retried."""
        if self._logged_in:
            return
        pin = pin_source.read()
        if pin is None:
            if not self._token.flags & CKF_PROTECTED_AUTHENTICATION_PATH:
                raise PinMissing(f"{pin_source.what} (token has no PIN pad)")
            user_pin: Any = pkcs11.PROTECTED_AUTH
        else:
            user_pin = pin.reveal()
        try:
            # A second session carries the login (python-pkcs11 has no Session.login);
            # login state is per token, so the working session is logged in too.
            self._login_session = self._token.open(rw=True, user_pin=user_pin)
        except p11e.UserAlreadyLoggedIn:
            # Another Token of this process logged this token in; that is enough.
            self._logged_in = True
            return
        except p11e.PinIncorrect:
            raise PinIncorrectError(tries_left(int(self._fresh_token().flags))) from None
        except p11e.PinLocked:
            raise PinLocked() from None
        except p11e.PKCS11Error as exc:
            raise map_error(exc, f"login to {self._token.label!r}") from None
        self._logged_in = True

    def mechanisms(self) -> frozenset[str]:
        if self._mechanisms is None:
            codes = guard(lambda: self._slot.get_mechanisms(), "listing mechanisms")
            self._mechanisms = frozenset(mechanism_name(int(m)) for m in codes)
        return self._mechanisms

    def _objects(self, **attrs: Any) -> list[Any]:
        template = {getattr(Attribute, k.rstrip("_").upper()): v for k, v in attrs.items()}
        return guard(lambda: list(self.session.get_objects(template)), "searching objects")

    def _handle(self, anchor: Any, public_obj: Any | None = None) -> Pkcs11KeyHandle:
        return guard(
            lambda: build_handle(
                self._objects, anchor, public_obj=public_obj, base_uri=self._base_uri,
                mechanisms=self.mechanisms(), guard=guard, locate=self._private_by_id,
                device=(self._token.manufacturer_id, self._token.model),
            ),
            "reading key attributes",
        )

    def _private_by_id(self, key_id: bytes) -> Any:
        found = self._objects(class_=ObjectClass.PRIVATE_KEY, id=key_id) if key_id else []
        if len(found) == 1:
            return found[0]
        if not self._logged_in:
            raise PinMissing("user PIN (log in to use the private key)")
        raise KeyNotFound(f"no private key with id {key_id.hex()} on {self._token.label!r}")

    def _public_anchors(self, **query: Any) -> list[Any]:
        """Before login private keys are hidden: public keys, else certificates, stand in."""
        pubs = self._objects(class_=ObjectClass.PUBLIC_KEY, **query)
        ids = {bytes(p[Attribute.ID]) for p in pubs}
        certs = self._objects(class_=ObjectClass.CERTIFICATE, **query)
        return pubs + [c for c in certs if bytes(c[Attribute.ID]) not in ids]

    def find_key(self, *, label: str | None = None, key_id: bytes | None = None) -> KeyHandle:
        """Requires login for private operations; before login it finds keys by their
        public key or certificate, and the private key is looked up on first use."""
        query, what = lookup_terms(label, key_id)
        found = self._objects(class_=ObjectClass.PRIVATE_KEY, **query)
        if not found and not self._logged_in:
            found = self._public_anchors(**query)
        return self._handle(the_one(found, what, f"token {self._token.label!r}"))

    def list_keys(self) -> list[KeyHandle]:
        """After login one handle per private key; before, per public key or certificate."""
        privates = self._objects(class_=ObjectClass.PRIVATE_KEY)
        anchors = privates if privates or self._logged_in else self._public_anchors()
        return [self._handle(o) for o in anchors]

    def _label_taken(self, label: str) -> bool:
        return any(
            self._objects(class_=cls, label=label)
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.CERTIFICATE)
        )

    def generate_keypair(self, spec: KeySpec) -> KeyHandle:
        """Requires login. CKA_ID = SHA-1 of the public key, set once the key exists."""
        if self._label_taken(spec.label):
            raise KeyExists(f"a key or certificate labelled {spec.label!r} already exists")
        public_t, private_t = keygen_templates(spec, os.urandom(20))
        key_type = P11_KEY_TYPE[key_type_of(spec.algorithm)]
        bits = spec.algorithm.rsa_bits if spec.algorithm.is_rsa else None
        pub, priv = guard(
            lambda: self.session.generate_keypair(
                key_type, bits, store=True, capabilities=0,
                public_template=public_t, private_template=private_t,
            ),
            f"generating {spec.algorithm.value} key {spec.label!r}",
        )
        try:
            key_id = key_id_for(read_public_key(pub))
            pub[Attribute.ID] = key_id
            priv[Attribute.ID] = key_id
            return self._handle(priv, pub)
        except BaseException:
            self._destroy_quietly(priv, pub)
            raise

    @staticmethod
    def _destroy_quietly(*objects: Any) -> None:
        for obj in objects:
            with contextlib.suppress(p11e.PKCS11Error):
                obj.destroy()

    def store_certificate(self, key: KeyHandle, certificate: x509.Certificate) -> None:
        if key_id_for(certificate.public_key()) != key_id_for(key.public_key):  # type: ignore[arg-type]
            raise UsageError(f"the certificate is not for key {key.label!r}")
        template = certificate_template(key.label, key.id, certificate)
        old = self._objects(class_=ObjectClass.CERTIFICATE, id=key.id)
        # New one first: a failure leaves the old certificate in place.
        guard(lambda: self.session.create_object(template), f"storing certificate of {key.label!r}")
        for obj in old:
            guard(obj.destroy, "replacing the certificate")
        key.certificate = certificate

    def delete(self, key: KeyHandle) -> None:
        """Private key, public key and certificate sharing the key's CKA_ID."""
        if not key.id:
            # An empty id would match every object without CKA_ID.
            raise UsageError(f"key {key.label!r} has no CKA_ID: delete it with pkcs11-tool")
        for cls in (ObjectClass.CERTIFICATE, ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
            for obj in self._objects(class_=cls, id=key.id):
                guard(obj.destroy, f"deleting {key.label!r}")
