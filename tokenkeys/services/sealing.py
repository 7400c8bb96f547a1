"""Sealing a bid: to certificates, or to a consultation's key and recorded backup keys.

Every rule of `seal` is here, so the CLI and any other front end apply the same:
the consultation checked against its pins, recipients valid now (unless told
otherwise), every recipient usable (keyUsage, key type: envelope.check_recipient),
the key transport each recipient's device can open, and the overwrite policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenkeys import keyalg
from tokenkeys.config import Config
from tokenkeys.envelope import SealOptions, named_by_issuer, seal
from tokenkeys.errors import PolicyRefused, UsageError
from tokenkeys.files import check_regular, prepare_output
from tokenkeys.i18n import _
from tokenkeys.services import key_certs


@dataclass(frozen=True)
class Sealed:
    """What `seal` did: the envelope written, to whom, with which key transports."""

    input: Path
    output: Path
    size: int
    recipients: tuple[str, ...]
    key_transports: tuple[str, ...]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"input": str(self.input), "output": str(self.output), "bytes": self.size,
                "recipients": list(self.recipients),
                "key_transports": list(self.key_transports), "notes": list(self.notes)}


def check_validity(certs: Sequence[x509.Certificate], *, allow_expired: bool,
                   now: datetime | None = None) -> None:
    """Refuse a recipient certificate that is not valid now (expired or not yet valid):
    its key may be gone, and nobody could open the bid. `allow_expired` overrides."""
    if allow_expired:
        return
    now = now or datetime.now(UTC)
    for cert in certs:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if not start <= now <= end:
            raise PolicyRefused(
                _("recipient {rfc4514_string} is not valid now (valid {start:%Y-%m-%d} to "
                  "{end:%Y-%m-%d}); --allow-expired overrides")
                .format(rfc4514_string=cert.subject.rfc4514_string(), start=start, end=end))


def recipients_of(config: Config, *, certificates: Sequence[Path], consultation: str | None,
                  service: str, key_transport: str | None
                  ) -> tuple[list[x509.Certificate], str | None]:
    """The recipient certificates, and the key transport a consultation imposes."""
    if bool(certificates) == bool(consultation):
        raise UsageError(_("give --recipient CERT... or --consultation REF (one of them)"))
    if consultation:
        from tokenkeys.services import consultations
        from tokenkeys.services.access import open_registry

        with open_registry(config) as registry:
            bound = consultations.load_for_use(registry, service, consultation)
        return (consultations.certificates(bound),
                consultations.seal_transport(bound, key_transport))
    return ([c for path in certificates
             for c in key_certs.load_certificates(path, _("recipient certificate"))],
            key_transport)


def seal_file(config: Config, input_path: Path, output: Path, *,
              certificates: Sequence[Path] = (), consultation: str | None = None,
              service: str = "default", authenticated: bool = True, key_bits: int = 256,
              key_transport: str | None = None, use_ski: bool = False, pem: bool = False,
              allow_expired: bool = False, allow_any_usage: bool = False,
              force: bool = False) -> Sealed:
    """Seal INPUT to the certificates, or to the consultation's key and recorded backups
    (streaming, constant memory); nothing is written when a rule refuses."""
    from tokenkeys.services.envelope_kinds import key_transports_for

    check_regular(input_path, _("input file"))  # streamed, any size: never a FIFO or device
    certs, key_transport = recipients_of(config, certificates=certificates,
                                         consultation=consultation, service=service,
                                         key_transport=key_transport)
    check_validity(certs, allow_expired=allow_expired)
    prepare_output(output, force)
    # An explicit key transport (or a consultation's choice) applies to all; otherwise
    # what the registry knows of each recipient's key. seal() checks every recipient
    # (check_recipient) before anything is written.
    chosen = (None,) * len(certs) if key_transport else key_transports_for(config, certs)
    options = SealOptions(authenticated=authenticated, key_bits=key_bits,
                          key_transport=key_transport or keyalg.DEFAULT_KEY_TRANSPORT,
                          use_ski=use_ski, pem=pem, allow_any_usage=allow_any_usage,
                          transports=chosen)
    size = seal(input_path, output, certs, options, overwrite=force)
    notes = [_("recipient {who} has no subject key identifier: named by issuer and serial")
             .format(who=who)
             for who in named_by_issuer(certs, options)]
    notes += [_("recipient {rfc4514_string}: its key opens PKCS#1 v1.5 only (its device has "
                "no OAEP), so it is sealed with pkcs1v15; --key-transport overrides")
              .format(rfc4514_string=c.subject.rfc4514_string())
              for c, t in zip(certs, chosen, strict=True) if t == keyalg.PKCS1V15]
    transports = tuple(t or options.key_transport
                       if isinstance(c.public_key(), rsa.RSAPublicKey) else "ecdh"
                       for c, t in zip(certs, chosen, strict=True))
    return Sealed(input_path, output, size, tuple(c.subject.rfc4514_string() for c in certs),
                  transports, tuple(notes))
