"""The one error tree. Every class carries a documented CLI exit code.

Messages never contain a PIN, SO PIN or passphrase: callers pass only
non-secret facts (labels, counts, mechanism names).
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenkeys.i18n import _, ngettext


class TokenKeysError(Exception):
    """Root of every error tokenkeys raises on purpose."""

    exit_code = 1


class UsageError(TokenKeysError):
    """Bad arguments, bad URI, bad configuration."""

    exit_code = 2


class SecretInUri(UsageError):
    def __init__(self) -> None:
        super().__init__(
            _("pin-value/pin-source in a URI is refused: secrets never go in URIs "
              "(use TOKENKEYS_PIN, --pin-file or the prompt)")
        )


class ModuleNotFound(TokenKeysError):
    exit_code = 3


class TokenNotFound(TokenKeysError):
    exit_code = 3


class DeviceRemoved(TokenNotFound):
    """The card was pulled out of its reader (or the device reset) during the command.

    `created`: the URI of a key pair the device made before it went (a card's fixed
    slot keeps it), so the caller can say what is left to do; None otherwise."""

    def __init__(self, message: str, created: str | None = None) -> None:
        super().__init__(message)
        self.created = created


class DeviceError(TokenKeysError):
    """The device or module answered with an unexpected PKCS#11 error."""

    exit_code = 3


class PinError(TokenKeysError):
    exit_code = 4


class PinIncorrect(PinError):
    def __init__(self, tries_left: str | int | None = None) -> None:
        # tries_left stays the English words the driver gave (programs read it).
        self.tries_left = tries_left
        if tries_left is None:
            hint = _("the token does not say how many tries remain")
        elif isinstance(tries_left, int):
            hint = ngettext("{count} try left", "{count} tries left",
                            tries_left).format(count=tries_left)
        else:
            hint = _(tries_left)
        super().__init__(_("PIN incorrect ({hint}); tokenkeys never retries a PIN by itself")
                         .format(hint=hint))


class PinLocked(PinError):
    def __init__(self, what: str = "PIN", how: str | None = None) -> None:
        super().__init__(_("{what} is locked: {how}").format(
            what=_(what), how=_(how) if how else _("the security officer must unblock it")))


class PinFinalTry(PinError):
    """The card is at its final PIN try and the PIN did not come from a person."""

    def __init__(self, origin: str, card: str) -> None:
        super().__init__(
            _("{card} is at its final PIN try: a PIN from {origin} is refused without being "
              "sent (a wrong one would lock the card); type it at the prompt, or add "
              "--allow-final-try if you are sure of it").format(card=card, origin=_(origin)))


class PinMissing(PinError):
    def __init__(self, what: str = "PIN") -> None:
        super().__init__(
            _("no {what} available: set the environment variable, use --pin-file, "
              "or run on a terminal to be prompted").format(what=_(what))
        )


class KeyProblem(TokenKeysError):
    exit_code = 5


class KeyNotFound(KeyProblem):
    pass


class MultipleKeysFound(KeyProblem):
    pass


class KeyExists(KeyProblem):
    pass


class CertificateRefused(KeyProblem):
    """A certificate or request that does not fit: wrong key, expired, wrong key usage,
    a chain that does not link, a CSR whose signature does not verify."""


class MechanismUnsupported(TokenKeysError):
    exit_code = 6

    def __init__(self, wanted: str, offered: Sequence[str] = (), *,
                 by: str = "this device") -> None:
        # `by`: who lacks it. The envelope layer says "tokenkeys": no device is involved.
        self.wanted = wanted
        self.offered = tuple(offered)
        offer = ", ".join(self.offered) if self.offered else _("nothing usable")
        if by == "this device":
            text = _("{wanted} is not supported by this device (it offers: {offered})")
        else:
            text = _("{wanted} is not supported by {by} (it supports: {offered})")
        super().__init__(text.format(wanted=wanted, by=by, offered=offer))


class EnvelopeError(TokenKeysError):
    exit_code = 7


class EnvelopeMalformed(EnvelopeError):
    pass


class EnvelopeIntegrity(EnvelopeError):
    pass


class NoMatchingRecipient(EnvelopeError):
    exit_code = 8

    def __init__(self, tried: Sequence[str], recipients: Sequence[str] = ()) -> None:
        self.tried = tuple(tried)
        self.recipients = tuple(recipients)
        tried_s = ", ".join(self.tried) if self.tried else _("no identity")
        shown = ", ".join(self.recipients[:3])
        if len(self.recipients) > 3:
            more = len(self.recipients) - 3
            shown = ngettext("{shown} and {count} more", "{shown} and {count} more",
                             more).format(shown=shown, count=more)
        if shown:
            text = _("no recipient of this envelope matches the keys tried ({tried}); it is "
                     "addressed to: {recipients}")
        else:
            text = _("no recipient of this envelope matches the keys tried ({tried})")
        super().__init__(text.format(tried=tried_s, recipients=shown))


class PolicyRefused(TokenKeysError):
    exit_code = 9


class BindingMismatch(PolicyRefused):
    """A consultation's record disagrees with the public keys pinned at its creation, or
    has no creation row in the audit log: the registry was changed outside tokenkeys."""


class AlreadyRenewed(PolicyRefused):
    """Renewing a key the registry already records a live successor for: a second one
    would put two (backup) keys in force where one was."""


class OutputExists(TokenKeysError):
    exit_code = 10


class BatchIncomplete(TokenKeysError):
    """Some envelopes of a batch could not be opened; the others were."""

    exit_code = 11


class RegistryError(TokenKeysError):
    """The registry database cannot be used: unreachable, read-only, or a newer schema."""

    exit_code = 12


class RegistryUnavailable(RegistryError):
    pass


class RegistryReadOnly(RegistryError):
    pass


class RegistrySchemaTooNew(RegistryError):
    pass


class RegistryForeign(RegistryError):
    """The database holds another application's tables: it is not a tokenkeys registry,
    and nothing is added to it."""


class NotRegistered(TokenKeysError):
    """A service, consultation or key the registry does not know."""

    exit_code = 13


class ServiceNotFound(NotRegistered):
    pass


class ConsultationNotFound(NotRegistered):
    pass


class AuditChainBroken(TokenKeysError):
    """`audit verify` found an edited, deleted or reordered row."""

    exit_code = 14


class CheckpointInvalid(AuditChainBroken):
    """An audit checkpoint whose signature does not verify."""


class DoctorProblems(TokenKeysError):
    """`doctor` found problems (one line each on its output)."""

    exit_code = 15


# Sharing a key (PKCS#12 files, device copy). Never carry the passphrase.


class PassphraseIncorrect(PinError):
    """The PKCS#12 passphrase does not open the file (or the file was altered)."""


class PassphraseWeak(UsageError):
    """A new PKCS#12 passphrase is below the enforced minimum."""


class FileMalformed(UsageError):
    """An input file (a PKCS#12 .p12/.pfx) is damaged or not of the expected kind."""


class CopyFailed(DeviceError):
    """A device-to-device copy step failed; the message names the step."""


class PassphraseMissing(PinError):
    def __init__(self) -> None:
        super().__init__(
            _("no PKCS#12 passphrase available: set TOKENKEYS_PASSPHRASE, "
              "or run on a terminal to be prompted")
        )


class NotExtractable(PolicyRefused):
    """Sharing a key generated to never leave its device: refused by design."""

    def __init__(self, label: str) -> None:
        super().__init__(
            _("key {label!r} is not extractable, by design: it was generated to never leave "
              "its device. To share a key, generate it with `key generate --shareable` before "
              "binding consultations to it; to survive the loss of a device, add backup keys "
              "(`key generate --backup`), to which every bid is also sealed").format(label=label)
        )


# The assistant: the local HTTP service the platform's web pages talk to.


class AccessRefused(PolicyRefused):
    """A request refused before anything is done: a foreign Host or Origin, a missing or
    revoked bearer token, a request a plain HTML form could send."""


class NotPaired(AccessRefused):
    """No bearer token, or one that is not this origin's (never paired, or revoked)."""


class PairingRefused(AccessRefused):
    """A pairing code that is wrong, expired or never asked for, or an origin locked after
    too many wrong codes."""

    def __init__(self, message: str, *, attempts_left: int | None = None,
                 locked: bool = False) -> None:
        super().__init__(message)
        self.attempts_left = attempts_left
        self.locked = locked


class ApprovalRefused(PolicyRefused):
    """The user refused the operation in the assistant, or did not answer in time."""


class LimitExceeded(UsageError):
    """A request over one of the assistant's limits: body size, concurrent requests."""


class SessionOver(PolicyRefused):
    """An opening session whose count or time limit is reached, or that was closed."""
