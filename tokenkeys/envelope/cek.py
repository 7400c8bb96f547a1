"""Content-key recovery: which identity opens which recipient, and in what order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from tokenkeys.envelope.identity_view import IdentityView
from tokenkeys.envelope.recipients import (
    KeyAgreeRecipient,
    KeyTransRecipient,
    NotMine,
    Opened,
    Recipient,
    UnsupportedRecipient,
)
from tokenkeys.errors import (
    EnvelopeIntegrity,
    MechanismUnsupported,
    NoMatchingRecipient,
    TokenKeysError,
)
from tokenkeys.i18n import _

_SUPPORTED = ("RSA PKCS#1 v1.5", "RSAES-OAEP SHA-1/SHA-2", "ECDH X9.63 + AES wrap")
_Pair = tuple[int, int]  # (recipient index, identity index)


@dataclass
class KeyTrial:
    """One open's passes over the file (open.py): the candidate content keys (found
    once: no second device call or PIN use on a re-run), the one in use, the AAD
    once found, and whether the content is CBC (no authentication tag)."""

    keys: list[Opened] = field(default_factory=list)
    index: int = 0
    aad: bytes | None = None
    cbc: bool = False


def recover_cek(recipients: list[Recipient], views: list[IdentityView], cek_len: int) -> Opened:
    """The first content key to try (content_keys)."""
    return content_keys(recipients, views, cek_len)[0]


def content_keys(recipients: list[Recipient], views: list[IdentityView],
                 cek_len: int) -> list[Opened]:
    """The content keys to try, in order; the content's own check picks (open.py).

    Matching identities first, then (only where a miss is detectable) the others:
    one key. Else certificate-less RSA identities on v1.5 recipients: every candidate
    block is decrypted, and each key-sized result is a candidate (a wrong key's block
    can give one: a device with implicit rejection, 1 time in about 250); none gives
    the countermeasure's random key.
    """
    search = _Search(recipients, views, cek_len)
    for step in (search.named_identities, search.detectable_misses):
        opened = step()
        if opened is not None:
            return [opened]
    found = search.certificate_less_v15()
    if found:
        return found
    raise search.failure()


@dataclass
class _Search:
    """One recover_cek: the pairs tried so far and the first reason to report."""

    recipients: list[Recipient]
    views: list[IdentityView]
    cek_len: int
    tried: set[_Pair] = field(default_factory=set)
    matched_failure: tuple[Recipient, IdentityView] | None = None
    matched_unsupported: UnsupportedRecipient | None = None

    def _pairs(self) -> Iterator[tuple[_Pair, Recipient, IdentityView]]:
        for ri, r in enumerate(self.recipients):
            for vi, v in enumerate(self.views):
                yield (ri, vi), r, v

    def _attempt(self, pair: _Pair, r: KeyTransRecipient | KeyAgreeRecipient,
                 v: IdentityView) -> Opened:
        self.tried.add(pair)
        return r.open_with(v, self.cek_len)

    def named_identities(self) -> Opened | None:
        """1. Identities that the recipient identifier names."""
        for pair, r, v in self._pairs():
            if not r.matches(v):
                continue
            if isinstance(r, UnsupportedRecipient):
                self.matched_unsupported = self.matched_unsupported or r
                continue
            try:
                return self._attempt(pair, r, v)
            except NotMine:
                self.matched_failure = self.matched_failure or (r, v)
        return None

    def detectable_misses(self) -> Opened | None:
        """2. Any compatible identity, but only where a wrong key fails visibly."""
        for pair, r, v in self._pairs():
            if (isinstance(r, UnsupportedRecipient) or not r.detectable
                    or pair in self.tried or not r.compatible(v)):
                continue
            try:
                return self._attempt(pair, r, v)
            except (NotMine, MechanismUnsupported):
                continue
        return None

    def certificate_less_v15(self) -> list[Opened]:
        """3. Certificate-less RSA identities on v1.5 recipients: nothing names the
        identity's own, so every candidate is decrypted (one device call each; the
        key's certificate on the device makes it one in all). The countermeasure
        applies: with no key-sized result, the first attempt's random key, which
        shows only as an integrity error of the content."""
        attempts = [self._attempt(pair, r, v) for pair, r, v in self._pairs()
                    if isinstance(r, KeyTransRecipient) and pair not in self.tried
                    and r.weak_match(v)]
        return [o for o in attempts if o.genuine] or attempts[:1]

    def failure(self) -> TokenKeysError:
        """Why nothing opened: a named identity that failed, else an unsupported
        recipient that named one, else no match at all."""
        if self.matched_failure is not None:
            r, v = self.matched_failure
            return EnvelopeIntegrity(
                _("{label} matches recipient {rid_text} but its content key does not decrypt "
                  "(damaged envelope or different key with the same name)")
                .format(label=v.label, rid_text=r.rid_text()))
        if self.matched_unsupported is not None:
            u = self.matched_unsupported
            return MechanismUnsupported(_("recipient {rid_text} uses {reason}")
                                        .format(rid_text=u.rid_text(), reason=u.reason), _SUPPORTED,
                                        by="tokenkeys")
        return NoMatchingRecipient([v.label for v in self.views],
                                   [r.describe() for r in self.recipients])
