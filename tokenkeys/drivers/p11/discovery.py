"""Choosing a binding for a module, finding a token by URI, waiting for a card.

The adapters are imported lazily: a process imports only the bindings it uses.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from tokenkeys.config import Config
from tokenkeys.drivers.modules import all_modules, candidate_modules, is_card_module
from tokenkeys.drivers.p11 import ck
from tokenkeys.drivers.p11.ckr import CkrError
from tokenkeys.drivers.p11.port import Port, SlotToken
from tokenkeys.drivers.pkcs11_tables import token_flag_words
from tokenkeys.errors import ModuleNotFound, TokenNotFound, UsageError
from tokenkeys.i18n import _
from tokenkeys.types import TokenInfo
from tokenkeys.uri import Pkcs11Uri

PYTHON_PKCS11 = "python-pkcs11"
PYKCS11 = "pykcs11"
BINDINGS = (PYTHON_PKCS11, PYKCS11)
WAIT_ENV = "TOKENKEYS_CARD_WAIT"
POLL_S = 0.1
RESCAN_S = 0.5  # rescan even without an event: some modules have no slot events
BUSY_TRIES = 3
BUSY_WAIT_S = 0.05
_PORTS: dict[tuple[str, str], Port] = {}
# Open P11Token sessions per module (real path, whatever the binding: both share
# the module's state): a module with none may be re-initialised.
SESSIONS: dict[str, int] = {}


def binding_for(module: str, config: Config) -> str:
    """PyKCS11 for OpenSC and configured card modules, python-pkcs11 otherwise."""
    return PYKCS11 if is_card_module(module, config) else PYTHON_PKCS11


def port_for(module: str, binding: str) -> Port:
    """The port of `module` through `binding`, one per process."""
    if binding not in BINDINGS:
        raise UsageError(_("unknown PKCS#11 binding {binding!r} (choose one of {BINDINGS})")
                         .format(binding=binding, BINDINGS=BINDINGS))
    key = (os.path.realpath(module), binding)
    port = _PORTS.get(key)
    if port is None:
        if binding == PYKCS11:
            from tokenkeys.drivers.p11.pykcs11 import PyKcs11Port

            port = PyKcs11Port(module)
        else:
            from tokenkeys.drivers.p11.python_pkcs11 import PyPkcs11Port

            port = PyPkcs11Port(module)
        _PORTS[key] = port
    return port


def _read(port: Port, slot: int) -> SlotToken | None:
    # A token another process is writing can answer CKR_GENERAL_ERROR for a moment
    # (SoftHSM2 file store): ask again before skipping it.
    for attempt in range(BUSY_TRIES):
        try:
            return port.token(slot)
        except CkrError:
            if attempt + 1 < BUSY_TRIES:
                time.sleep(BUSY_WAIT_S)
    return None


def scan(port: Port) -> list[SlotToken]:
    """Initialised tokens now present; one pulled out (or busy) mid-scan is skipped."""
    found = []
    for slot in port.slots():
        st = _read(port, slot)
        if st is not None and st.flags & ck.CKF_TOKEN_INITIALIZED:
            found.append(st)
    return found


def matches(st: SlotToken, uri: Pkcs11Uri) -> bool:
    wanted = {"token": st.label, "serial": st.serial, "manufacturer": st.manufacturer,
              "model": st.model, "slot-id": str(st.slot)}
    return all(uri.attrs[k] == v for k, v in wanted.items() if k in uri.attrs)


def describe(uri: Pkcs11Uri) -> str:
    keys = ("token", "serial", "slot-id", "manufacturer", "model")
    return ";".join(f"{k}={uri.attrs[k]}" for k in keys if k in uri.attrs) or _("any token")


def token_uri(st: SlotToken, module: str) -> Pkcs11Uri:
    return Pkcs11Uri(attrs={"token": st.label, "serial": st.serial},
                     query={"module-path": module})


def token_info(st: SlotToken, module: str) -> TokenInfo:
    return TokenInfo(label=st.label, manufacturer=st.manufacturer, model=st.model,
                     serial=st.serial, module=module, slot=st.slot,
                     flags=token_flag_words(st.flags), uri=str(token_uri(st, module)))


def pick(ports: list[Port], uri: Pkcs11Uri, seen: list[str] | None = None
         ) -> tuple[Port, SlotToken] | None:
    """The one token `uri` names. A card with several PIN slots (OpenPGP: "User PIN",
    "User PIN (sig)") counts once: OpenSC lists the decryption PIN's slot first."""
    hits: list[tuple[Port, SlotToken]] = []
    for port in ports:
        try:
            tokens = scan(port)
        except CkrError:
            continue
        if seen is not None:
            seen.extend(f"{t.label!r} serial {t.serial} ({os.path.basename(port.module)})"
                        for t in tokens)
        hits.extend((port, t) for t in tokens if matches(t, uri))
    distinct = {(os.path.realpath(p.module), t.serial) for p, t in hits}
    if len(distinct) > 1:
        names = ", ".join(f"{t.label!r} serial {t.serial}" for _, t in hits)
        raise UsageError(_("several tokens match {uri} ({names}): add serial= or module-path=")
                         .format(uri=describe(uri), names=names))
    return hits[0] if hits else None


def card_wait_seconds() -> float:
    text = os.environ.get(WAIT_ENV, "0") or "0"
    try:
        value = float(text)
    except ValueError:
        raise UsageError(_("{WAIT_ENV} must be a number of seconds, not {text!r}")
                         .format(WAIT_ENV=WAIT_ENV, text=text)) from None
    return max(0.0, value)


def wait_for(ports: list[Port], uri: Pkcs11Uri, timeout: float,
             clock: Callable[[], float] = time.monotonic) -> tuple[Port, SlotToken] | None:
    """Poll slot events (non-blocking) until a matching token is present, or None."""
    deadline = clock() + timeout
    next_scan = 0.0
    while True:
        event = any([p.slot_event() for p in ports])
        now = clock()
        if event or now >= next_scan:
            next_scan = now + RESCAN_S
            hit = pick(ports, uri)
            if hit is not None:
                return hit
        if now >= deadline:
            return None
        time.sleep(POLL_S)


def find(uri: Pkcs11Uri, config: Config, *, binding: str | None = None,
         wait: float | None = None) -> tuple[Port, SlotToken]:
    """The port and token `uri` names, waiting up to `wait` seconds (default
    TOKENKEYS_CARD_WAIT, 0) for it to be inserted."""
    modules = candidate_modules(uri, config)
    ports: list[Port] = []
    for module in modules:
        try:
            ports.append(port_for(module, binding or binding_for(module, config)))
        except ModuleNotFound:
            if len(modules) == 1:
                raise
    seen: list[str] = []
    hit = pick(ports, uri, seen)
    if hit is None and _refresh(ports):
        # A module reads its token list at C_Initialize (SoftHSM2): one loaded
        # earlier in this process, or busy then, may miss the token. Read again.
        seen.clear()
        hit = pick(ports, uri, seen)
    timeout = card_wait_seconds() if wait is None else wait
    if hit is None and timeout > 0:
        hit = wait_for(ports, uri, timeout)
    if hit is None:
        raise TokenNotFound(not_found(ports, describe(uri), timeout, seen, config))
    return hit


def _readers(port: Port) -> int | None:
    """How many reader slots a card module has (None: the binding cannot say)."""
    count = getattr(port, "reader_slots", None)
    try:
        return len(count()) if callable(count) else None
    except CkrError:
        return 0


def not_found(ports: list[Port], what: str, timeout: float, seen: list[str],
              config: Config) -> str:
    """Why nothing matched, in the words a card user needs: no reader, no card, other card."""
    waited = _(" after waiting {timeout:g} s").format(timeout=timeout) if timeout > 0 else ""
    cards = [p for p in ports if is_card_module(p.module, config)]
    if cards and len(cards) == len(ports) and not seen:
        readers = [_readers(p) for p in cards]
        if all(r == 0 for r in readers):
            return (_("no card reader found{waited} (modules: {items}): plug the reader in "
                      "and check that pcscd is running")
                    .format(waited=waited,
                            items=', '.join(os.path.basename(p.module) for p in cards)))
        return (_("no card in the reader{waited} ({what}): insert the card, or wait for it "
                  "with --wait-card SECONDS").format(waited=waited, what=what))
    return (_("no token matches {what}{waited} (tokens present: {tokens})")
            .format(what=what, waited=waited, tokens=", ".join(seen) or _("none")))


def wait_for_card(config: Config, timeout: float) -> None:
    """Wait up to `timeout` s until some card module has a token (slot events, polled).
    Raises TokenNotFound (no reader / no card) when none comes."""
    ports = []
    for module in all_modules(config):
        if is_card_module(module, config):
            with contextlib.suppress(ModuleNotFound):
                ports.append(port_for(module, binding_for(module, config)))
    if not ports:
        raise TokenNotFound(_("no smartcard module found (install OpenSC, or list the card's "
                              "module in card_modules of the configuration)"))
    # wait_for scans at once, and returns None at once when timeout is 0.
    if wait_for(ports, Pkcs11Uri(), timeout) is None:
        raise TokenNotFound(not_found(ports, _("any card"), timeout, [], config))


def _refresh(ports: list[Port]) -> bool:
    """Re-initialise the modules no open token of this process uses."""
    done = False
    for port in ports:
        if SESSIONS.get(os.path.realpath(port.module), 0) == 0:
            try:
                port.reinitialise()
                done = True
            except CkrError:
                continue
    return done


def list_all(config: Config) -> list[TokenInfo]:
    """Every initialised token of every module; modules that do not load are skipped."""
    found: list[TokenInfo] = []
    for module in all_modules(config):
        try:
            port = port_for(module, binding_for(module, config))
            found.extend(token_info(st, module) for st in scan(port))
        except (ModuleNotFound, CkrError):
            continue
    return found
