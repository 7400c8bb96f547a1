"""`share copy`: a shareable key copied device to device, never in clear outside the
devices, and crash-safe like generation (services.keygen): the copy is made under a
provisional label; its private key takes the name just before the registry records
it, its public key and certificates just after. A rerun finds what an interrupted
copy left: one the registry records is finished, any other is removed first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from cryptography import x509

from tokenkeys import keyalg
from tokenkeys.drivers.base import KeyHandle, Token
from tokenkeys.drivers.capabilities import (
    CertificateStore,
    KeyTransport,
    TransportKey,
    require,
)
from tokenkeys.errors import (
    CopyFailed,
    KeyExists,
    MechanismUnsupported,
    PolicyRefused,
    TokenKeysError,
    UsageError,
)
from tokenkeys.i18n import N_, _
from tokenkeys.services import interrupted, keygen
from tokenkeys.services.share import (
    AuditHook,
    ShareEvent,
    ShareResult,
    chain_of,
    check_decryption,
    record_share_event,
    refuse_present,
    shareable_key,
    store_certificate,
    undo_on_failure,
)
from tokenkeys.services.token_keys import describe

if TYPE_CHECKING:
    from tokenkeys.registry import Registry

# Whether the registry records a key (its CKA_ID) on a token: a copy's commit happened.
Locator = Callable[[Token, bytes], bool]


def registry_locator(open_registry: Callable[[], Registry]) -> Locator:
    """Asks the registry whether it records a key (CKA_ID) at a token, in any service."""

    def locates(token: Token, key_id: bytes) -> bool:
        with open_registry() as reg:
            return key_id.hex() in interrupted.rows_here(reg, token)

    return locates


STEPS = (
    N_("1/5 create the transport key pair on the target"),
    N_("2/5 wrap the key on the source (AES key wrap, then RSA-OAEP)"),
    N_("3/5 unwrap the key on the target"),
    N_("4/5 store the certificate on the target"),
    N_("5/5 test decryption on the target"),
    N_("destroy the transport key pair on the target"),
)


@contextlib.contextmanager
def _step(number: int) -> Iterator[None]:
    """Name the step in whatever a device refused."""
    try:
        yield
    except MechanismUnsupported as exc:
        raise MechanismUnsupported(_("device copy, step {step}: {wanted}")
                                   .format(step=_(STEPS[number]), wanted=exc.wanted),
                                   exc.offered) from None
    except (KeyExists, PolicyRefused, UsageError):
        raise
    except TokenKeysError as exc:
        outcome = (_("the copy is in place; the transport key is a session object, gone when "
                     "the session ends") if number == len(STEPS) - 1
                   else _("nothing was left on either token"))
        raise CopyFailed(_("device copy failed at step {step}: {exc}; {outcome}")
                         .format(step=_(STEPS[number]), exc=exc, outcome=outcome)
                         ) from None


def _resume_copy(target: Token, key: KeyHandle, cert: x509.Certificate,
                 locates: Locator | None) -> KeyHandle | None:
    """What an interrupted copy of `key` left on the target: finished and returned if
    the registry recorded it, else removed (None). Under the target's designation lock."""
    key_id = keyalg.key_id(key.public_key)
    left = keygen.unfinished(target, key_id)
    if not left:
        return None
    if locates is None:
        raise KeyExists(_("an interrupted copy left key {left!r} on {uri}: run `tokenkeys "
                          "key cleanup` on that token, then copy again")
                        .format(left=left[0], uri=target.uri))
    if locates(target, key_id):
        return interrupted.finish(target, target.find_key(key_id=key_id), cert)
    keygen.remove_unrecorded(target, key_id)
    return None


def copy_key(source: Token, name_or_uri: str, target: Token, *,
             shareable: bool = False, audit: AuditHook | None = None,
             locates: Locator | None = None) -> ShareResult:
    """Copy a shareable key device to device; it is never in clear outside the devices.

    The target makes a transient RSA key pair; the source wraps the key under an
    ephemeral AES key and that key under the transport key; the target unwraps
    both. A test decryption follows; transient keys are destroyed on both sides.
    The copy is crash-safe (module docstring): `audit` records it (the commit),
    `locates` asks the registry whether it records a copy an interrupted run left.
    """
    if source.uri == target.uri:
        raise UsageError(_("--token and --to-token name the same token"))
    key, cert = shareable_key(source, name_or_uri)
    # mypy cannot pass a Protocol as type[C] (python/mypy#4717): hence the ignores.
    sender = require(source, KeyTransport,
                     _("wrapping a key for transport (source token)"))
    receiver = require(target, KeyTransport,
                       _("receiving a wrapped key (target token)"))
    chain = chain_of(source, key)
    with keygen.designation_lock(target):
        finished = _resume_copy(target, key, cert, locates)
        if finished is not None:
            stored = len(target.certificate_chain(finished)) if isinstance(
                target, CertificateStore) else 0
            return ShareResult(describe(finished), "copy", None, None, stored, source.uri,
                               (_("finished the copy an interrupted run had recorded on {uri}")
                                .format(uri=target.uri),))
        refuse_present(target, key.label, key.public_key, target.uri)
        copy = _copy(sender, receiver, key, cert, chain, target, shareable=shareable,
                     audit=audit, locates=locates, source_uri=source.uri)
    stored = len(chain) if isinstance(target, CertificateStore) else 0
    return ShareResult(describe(copy), "copy", None, None, stored, source.uri)


def _copy(sender: KeyTransport, receiver: KeyTransport, key: KeyHandle,
          cert: x509.Certificate, chain: list[x509.Certificate], target: Token, *,
          shareable: bool, audit: AuditHook | None, locates: Locator | None,
          source_uri: str) -> KeyHandle:
    with _step(0):
        transport: TransportKey = receiver.create_transport_key()
    try:
        with _step(1):
            wrapped = sender.wrap_for_transport(key, transport.public_key)
        with _step(2):
            copy = receiver.unwrap_transported(transport, wrapped,
                                               label=keygen.provisional_label(key.label),
                                               shareable=shareable)
        recorded = None if locates is None else (lambda key_id: locates(target, key_id))
        with undo_on_failure(target, copy, recorded):
            with _step(3):
                store_certificate(target, copy, cert, chain)
            with _step(4):
                check_decryption(copy)
            # In place on some devices: done while no registry records the copy.
            target.label_private_key(copy, key.label)
            record_share_event(audit, ShareEvent("share-copy", target, copy, {
                "ckaid": key.id.hex(), "from": source_uri, "to": target.uri,
                "shareable": shareable}, name=key.label))
        target.label_public_objects(copy, key.label)  # never in place: the copy is recorded
    except BaseException:
        with contextlib.suppress(TokenKeysError):  # the first failure is the one to report
            receiver.destroy_transport_key(transport)
        raise
    with _step(5):
        receiver.destroy_transport_key(transport)
    return copy
