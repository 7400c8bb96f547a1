"""`doctor` never sends TOKENKEYS_PIN to a token it does not know (real SoftHSM2).

Two tokens in one SoftHSM2 store: one the registry names, and a stranger's with
another PIN. SoftHSM2 sets CKF_USER_PIN_COUNT_LOW after one wrong C_Login (and a
right one clears it): the stranger's flags show whether doctor tried its PIN there.
"""

from __future__ import annotations

from typing import Any

from tests.cli.conftest import TK
from tokenkeys.drivers.p11.admin import init_token
from tokenkeys.types import Secret

COUNT_LOW = "user-pin-count-low"


def _flags(tk: TK, label: str) -> list[str]:
    listed = tk("--json", "token", "list")
    assert listed.code == 0, listed.err
    [token] = [t for t in listed.json["tokens"] if t["label"] == label]
    return list(token["flags"])


def _report(run: Any, label: str) -> dict[str, Any]:
    [token] = [t for t in run.json["tokens"] if f"token={label};" in t["uri"]]
    return dict(token)


def test_doctor_logs_in_only_to_tokens_it_knows(tk: TK, softhsm: Any) -> None:
    ours = softhsm.new_token("ours")
    assert tk("key", "generate", "--token", softhsm.uri(ours), "--name", "K",
              "--algorithm", "ec-p256").code == 0  # the registry names this token
    stranger = f"stranger-{ours}"
    init_token(softhsm.module, stranger, Secret(softhsm.so_pin), Secret("654321"))
    assert COUNT_LOW not in _flags(tk, stranger)

    run = tk("--json", "doctor")  # TOKENKEYS_PIN=123456: ours, not the stranger's
    assert run.code in (0, 15), run.err
    assert _report(run, ours)["keys"] == []  # logged in: no key expiring
    assert "error" not in _report(run, stranger), _report(run, stranger)  # no wrong PIN
    assert "not logged in" in _report(run, stranger)["keys"]
    assert COUNT_LOW not in _flags(tk, stranger)  # no C_Login was made there

    # Given with --token, it is logged in to: the wrong PIN shows in its flags (so the
    # check above would have seen a login), and the next run spends no further try.
    given = tk("--json", "doctor", "--token", softhsm.uri(stranger))
    assert "PIN incorrect" in _report(given, stranger)["error"]
    assert COUNT_LOW in _flags(tk, stranger)
    again = tk("--json", "doctor", "--token", softhsm.uri(stranger))
    assert "reports a low PIN try count" in _report(again, stranger)["error"]
