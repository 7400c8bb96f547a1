"""`tokenkeys doctor`: modules, tokens and what each can do, and the registry's health.

Token reports give the device's class (HSM, TPM, smartcard, software) and what it can
do as measured (services/device_caps.py: key sizes, the routes that open each
envelope kind, the signing path, sharing), which mechanisms tokenkeys uses are
offered, and what each key can open (public objects, no PIN); with TOKENKEYS_PIN,
which keys expire. TOKENKEYS_PIN
is sent only to a token doctor knows: one given (--token, or the configured default
token) or one the registry records a key on; never to another token on the machine
(somebody else's card), and never while the token's flags say the PIN's try count is
low, at its final try, or locked. The registry check gives one line per problem:

- a key bound to an open consultation has expired, or expires within N days;
- a service's backup keys have all expired, or it has none;
- a registry key is missing from its token (when the token is present);
- a key on a registry token is not in the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tokenkeys import keyalg
from tokenkeys.config import Config
from tokenkeys.drivers import Token, list_modules, list_tokens, open_token
from tokenkeys.errors import ModuleNotFound, PinError, TokenKeysError, TokenNotFound
from tokenkeys.i18n import N_, _
from tokenkeys.registry import KeyRow, Registry
from tokenkeys.registry.audit import now_text
from tokenkeys.services.audit_checkpoint import checkpoint_age
from tokenkeys.services.device_caps import DeviceCaps, token_capabilities
from tokenkeys.services.login import describe_card, login, pin_origin
from tokenkeys.services.token_keys import KeyRecord, list_keys
from tokenkeys.types import PinSource, TokenInfo
from tokenkeys.uri import same_token

# What tokenkeys uses, and for what.
RELEVANT = {
    "RSA_PKCS_KEY_PAIR_GEN": N_("generate RSA keys"),
    "EC_KEY_PAIR_GEN": N_("generate EC keys"),
    "RSA_PKCS_OAEP": N_("open OAEP envelopes on the device"),
    "RSA_X_509": N_("open OAEP-SHA-2 envelopes (raw RSA + software decoding)"),
    "RSA_PKCS": N_("open PKCS#1 v1.5 envelopes"),
    "ECDH1_DERIVE": N_("open ECDH envelopes"),
    "SHA256_RSA_PKCS": N_("sign certificates (RSA, hashing on the device)"),
    "ECDSA": N_("sign certificates (EC, over a software hash)"),
    "AES_KEY_WRAP_PAD": N_("share keys between tokens"),
}


COUNT_LOW = "user-pin-count-low"
UNKNOWN = (N_("not logged in: doctor sends TOKENKEYS_PIN only to a token given with --token "
              "(or the default token) or named by the registry"))


@dataclass
class Logins:
    """Doctor's logins: TOKENKEYS_PIN only (empty = not given), only to a `known` token
    (URIs naming a token by label and serial: same_token), never while the PIN's count
    is low, at its final try or locked, and at most one attempt per token and run. A
    failed attempt is remembered and raised again without sending anything."""

    known: tuple[str, ...] = ()
    failed: dict[tuple[str, str, str], TokenKeysError] = field(default_factory=dict)

    @staticmethod
    def pin_given() -> bool:
        return pin_origin(PinSource(interactive=False)) == "env"

    def knows(self, info: TokenInfo) -> bool:
        return any(same_token(info.uri, uri) for uri in self.known)

    def login(self, token: Token, *, named: bool = False) -> bool:
        """Log in with TOKENKEYS_PIN; False (nothing sent) when it is not given or the
        token is not known (`named`: opened from the registry's own record of it)."""
        if not self.pin_given():
            return False
        info = token.info()
        if not (named or self.knows(info)):
            return False
        card = (info.module, info.serial, info.label)
        if card in self.failed:
            raise self.failed[card]
        try:
            if COUNT_LOW in info.flags:
                # The next wrong PIN may be the last but one; doctor runs unattended.
                raise PinError(
                    _("{info} reports a low PIN try count: doctor does not spend a try of "
                      "TOKENKEYS_PIN on it; log in once with the right PIN (e.g. `tokenkeys "
                      "key list --token URI`), which resets the count")
                    .format(info=describe_card(info)))
            login(token, PinSource(interactive=False))  # locked, final try: refused there
        except TokenKeysError as exc:
            self.failed[card] = exc
            raise
        return True


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_registry(registry: Registry, open_token: Callable[[str], Token], *,
                   days: int = 30, logins: Logins | None = None) -> Report:
    report = Report()
    now = now_text()
    soon = now_text(datetime.now(UTC) + timedelta(days=days))
    report.problems.extend(registry.consultation_problems())  # the chain: `audit verify`
    for c in registry.all_open_consultations():
        k = c.key
        if k.not_after is None:
            continue  # no certificate: a binding problem, reported above
        if k.not_after <= now:
            report.problems.append(_("consultation {reference!r} (service {service!r}): its "
                                     "key {designation!r} expired on {not_after}")
                                   .format(reference=c.reference, service=c.service,
                                           designation=k.designation, not_after=k.not_after))
        elif k.not_after <= soon:
            report.problems.append(_("consultation {reference!r} (service {service!r}): its "
                                     "key {designation!r} expires on {not_after}, within "
                                     "{days} days")
                                   .format(reference=c.reference, service=c.service,
                                           designation=k.designation, not_after=k.not_after,
                                           days=days))
    live = registry.keys()
    for service in sorted({k.service for k in live}):
        if registry.backups_in_force(service):
            continue
        had = [k for k in live if k.service == service and k.backup]
        report.problems.append(_("service {service!r}: all its backup keys have expired")
                               .format(service=service) if had
                               else _("service {service!r} has no backup key")
                                    .format(service=service))
    by_token: dict[str, list[tuple[KeyRow, str]]] = {}
    for k in live:
        for loc in k.locations:
            by_token.setdefault(loc.token_uri, []).append((k, loc.ckaid))
    for uri, located in sorted(by_token.items()):
        _check_token(uri, located, registry, open_token, report, logins or Logins())
    return report


def _check_token(uri: str, rows: list[tuple[KeyRow, str]], registry: Registry,
                 open_token: Callable[[str], Token], report: Report, logins: Logins) -> None:
    try:
        token = open_token(uri)
    except (TokenNotFound, ModuleNotFound):
        report.notes.append(_("token {uri} is not present: its keys were not checked")
                            .format(uri=uri))
        return
    except TokenKeysError as exc:
        report.notes.append(_("token {uri} could not be opened ({exc}): not checked")
                            .format(uri=uri, exc=exc))
        return
    with token:
        if not logins.login(token, named=True):
            report.notes.append(_("set TOKENKEYS_PIN to compare the registry with token {uri}")
                                .format(uri=uri))
            return
        on_token = token.list_keys()
    ids = {k.id.hex() for k in on_token}
    for row, ckaid in rows:
        if ckaid not in ids:
            report.problems.append(_("key {designation!r} (service {service!r}) is in the "
                                     "registry but missing from its token {uri}")
                                   .format(designation=row.designation, service=row.service,
                                           uri=uri))
    known = {ckaid for _, ckaid in rows}
    for key in on_token:
        if key.id.hex() in known:
            continue
        if any(r.deleted_at is None for r in registry.keys_by_public_key(
                keyalg.public_key_sha256(key.public_key))):
            continue
        report.problems.append(_("key {label!r} on token {uri} is not in the registry "
                                 "(`tokenkeys key adopt` references it)")
                               .format(label=key.label, uri=uri))


@dataclass(frozen=True)
class TokenReport:
    """One token: its class and what it can do as measured (device_caps), the
    mechanisms tokenkeys uses, what each key opens, and (with a PIN) the keys that are
    not valid; `error` when the token could not be read."""

    info: TokenInfo
    device: DeviceCaps | None = None
    mechanisms: dict[str, bool] = field(default_factory=dict)
    opens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    not_valid: tuple[KeyRecord, ...] | None = None  # None: no PIN to look
    error: str | None = None
    no_login: str | None = None  # why the keys were not checked (a PIN was given)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"uri": self.info.uri}
        if self.error is not None:
            out["error"] = self.error
            return out
        if self.device is not None:
            out["device"] = self.device.to_json()
        out["mechanisms"] = self.mechanisms
        out["opens"] = {name: list(kinds) for name, kinds in self.opens.items()}
        out["keys"] = (self.no_login or _("set TOKENKEYS_PIN to check key expiry")
                       if self.not_valid is None else [r.to_json() for r in self.not_valid])
        return out


@dataclass(frozen=True)
class DoctorReport:
    modules: tuple[str, ...]
    tokens: tuple[TokenReport, ...]
    registry: Report

    def to_json(self) -> dict[str, object]:
        return {"modules": list(self.modules), "tokens": [t.to_json() for t in self.tokens],
                "problems": self.registry.problems, "notes": self.registry.notes}


def check_token(info: TokenInfo, config: Config, logins: Logins) -> TokenReport:
    try:
        with open_token(info.uri, config) as tok:
            device = token_capabilities(tok)
            mechs = tok.mechanisms()
            offered = {m: (m in mechs) for m in RELEVANT}
            if not logins.login(tok):
                # Public objects only: no PIN needed to say what each key can open.
                records = list_keys(tok)
                return TokenReport(info, device, offered,
                                   {r.designation: r.opens for r in records},
                                   no_login=UNKNOWN if logins.pin_given() else None)
            records = list_keys(tok)
            return TokenReport(info, device, offered, {r.designation: r.opens for r in records},
                               tuple(r for r in records if r.status != "valid"))
    except TokenKeysError as exc:
        return TokenReport(info, error=str(exc))


def known_tokens(config: Config, registry: Registry, given: Sequence[str] = ()
                 ) -> tuple[tuple[str, ...], list[str]]:
    """The URIs of the tokens doctor may log in to: each given one (else the default
    token) as it resolves now (label and serial), and every token the registry records
    a key on; and a note for each given token that could not be found."""
    known: list[str] = []
    notes: list[str] = []
    for uri in given or ([config.default_token] if config.default_token else []):
        try:
            with open_token(uri, config) as tok:
                known.append(tok.info().uri)
        except TokenKeysError as exc:
            notes.append(_("token {uri} was not checked: {exc}").format(uri=uri, exc=exc))
    rows = registry.keys()
    known.extend(sorted({loc.token_uri for row in rows for loc in row.locations}))
    return tuple(known), notes


def run(config: Config, registry: Registry, *, days: int = 30,
        tokens: Sequence[str] = ()) -> DoctorReport:
    """Every check; never prompts for a PIN (TOKENKEYS_PIN only, one try per token, and
    only on a token given in `tokens` (else the default token) or named by the registry)."""
    known, notes = known_tokens(config, registry, tokens)
    logins = Logins(known)
    checked = tuple(check_token(t, config, logins) for t in list_tokens(config))
    report = check_registry(registry, lambda uri: open_token(uri, config), days=days,
                            logins=logins)
    report.notes[:0] = notes
    age = checkpoint_age(config, registry)  # the audit log's anchor off the database
    report.problems.extend(age.problems)
    report.notes.extend(age.notes)
    return DoctorReport(tuple(list_modules(config)), checked, report)
