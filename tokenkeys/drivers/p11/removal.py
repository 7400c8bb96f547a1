"""How P11Token names a device's failure: a pulled card (DeviceRemoved), else the
error the CKR code maps to.

Some profiles answer a pulled card with ambiguous codes (Profile.removal_codes): the
reader is asked, for up to GONE_WAIT_S, whether the slot still shows the token.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from tokenkeys.drivers.p11.ckr import REMOVED, CkrError, to_error
from tokenkeys.drivers.p11.port import Port, SlotToken
from tokenkeys.drivers.p11.profiles import Profile
from tokenkeys.errors import DeviceRemoved, TokenKeysError
from tokenkeys.i18n import _

# How long the reader may take to notice a card pulled out (pcscd polls its readers).
GONE_WAIT_S = 1.0
GONE_POLL_S = 0.1


class RemovalMethods:
    """P11Token's error naming (explain, removed, device_errors)."""

    port: Port
    slot: SlotToken
    profile: Profile

    def explain(self, code: int, what: str, offered: Sequence[str] = ()) -> TokenKeysError:
        """The error tree's error for `code`: DeviceRemoved when the profile says the
        answer may mean a pulled card and the reader no longer shows it."""
        if self.removed(code):
            return DeviceRemoved(_("{what}: {reason}").format(what=what, reason=_(REMOVED)))
        return to_error(code, what, offered)

    def removed(self, code: int) -> bool:
        """Was this answer a pull? Only for the profile's ambiguous codes, and only
        when the reader no longer shows the device (a check of up to GONE_WAIT_S)."""
        return code in self.profile.removal_codes and self._gone()

    @contextlib.contextmanager
    def device_errors(self, what: str, offered: Sequence[str] = ()) -> Iterator[None]:
        """ckr_errors, with a pulled card named as such (explain)."""
        try:
            yield
        except CkrError as exc:
            raise self.explain(exc.code, what, offered) from None

    def _gone(self) -> bool:
        """Whether this token's slot shows no token, within GONE_WAIT_S."""
        deadline = time.monotonic() + GONE_WAIT_S
        while True:
            try:
                if self.slot.slot not in self.port.slots():
                    return True
            except CkrError:
                return False  # the module cannot say: name the original error
            if time.monotonic() >= deadline:
                return False
            time.sleep(GONE_POLL_S)
