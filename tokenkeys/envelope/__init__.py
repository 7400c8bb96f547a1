"""CMS envelopes (RFC 5652 / 5083): seal to certificates, open with Identities.

Streaming and constant-memory both ways; never imports tokenkeys.drivers.
"""

from tokenkeys.envelope.identity import Identity, SoftwareIdentity
from tokenkeys.envelope.open import (
    OpenResult,
    describe_recipients,
    open_envelope,
    recipient_ids,
)
from tokenkeys.envelope.seal import (
    SealOptions,
    check_recipient,
    named_by_issuer,
    seal,
)

__all__ = [
    "Identity",
    "OpenResult",
    "SealOptions",
    "SoftwareIdentity",
    "check_recipient",
    "describe_recipients",
    "named_by_issuer",
    "open_envelope",
    "recipient_ids",
    "seal",
]
