"""Hypothesis fuzzing of mutated valid envelopes: only TokenKeysError may escape."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenkeys.envelope import SealOptions, describe_recipients, open_envelope, seal
from tokenkeys.errors import TokenKeysError

from .conftest import KeyPair

PLAINTEXT = b"sealed bid, lot 3: 1 234 567,89 EUR\n" * 40
EXAMPLES = int(os.environ.get("TOKENKEYS_FUZZ_EXAMPLES", "200"))


@pytest.fixture(scope="module")
def corpus(keys: dict[str, KeyPair]) -> list[bytes]:
    out = []
    for names, opts in ((["rsa"], SealOptions()),
                        (["p256", "rsa"], SealOptions(authenticated=False, use_ski=True)),
                        (["rsa"], SealOptions(key_transport="pkcs1v15")),
                        (["rsa"], SealOptions(pem=True))):
        with tempfile.TemporaryDirectory() as d:
            env = Path(d) / "e"
            seal(io.BytesIO(PLAINTEXT), env, [keys[n].cert for n in names], opts)
            out.append(env.read_bytes())
    # An S/MIME wrapping of the first one.
    body = base64.encodebytes(out[0])
    out.append(b"MIME-Version: 1.0\nContent-Type: application/pkcs7-mime; "
               b"smime-type=enveloped-data\nContent-Transfer-Encoding: base64\n\n" + body)
    return out


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("splice"), st.integers(0, 1 << 20), st.integers(0, 1 << 20)),
    # Hostile shapes: many tiny or empty elements inserted anywhere.
    st.tuples(st.just("repeat"), st.integers(0, 1 << 20),
              st.tuples(st.sampled_from([b"\x04\x00", b"\x30\x00", b"\x30\x80\x00\x00",
                                         b"\x31\x00", b"\xa1\x80\x00\x00",
                                         b"\x30\x03\x02\x01\x02"]),
                        st.integers(1, 200_000))),
)


def _mutate(data: bytes, other: bytes, ops: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, arg in ops:
        pos %= len(buf) + 1
        if kind == "flip" and buf:
            buf[pos % len(buf)] ^= int(arg)  # type: ignore[call-overload]
        elif kind == "insert":
            buf[pos:pos] = arg  # type: ignore[call-overload]
        elif kind == "delete":
            del buf[pos : pos + int(arg)]  # type: ignore[call-overload]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "repeat":
            element, count = arg  # type: ignore[misc]
            buf[pos:pos] = element * count
        elif kind == "splice":
            cut = int(arg) % (len(other) + 1)  # type: ignore[call-overload]
            buf[pos:] = other[cut:]
    return bytes(buf)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 4), donor=st.integers(0, 4),
       ops=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutated_envelopes(keys: dict[str, KeyPair], corpus: list[bytes], which: int,
                                donor: int, ops: list[tuple[str, int, object]]) -> None:
    data = _mutate(corpus[which], corpus[donor], ops)
    identities = [keys["p256"].identity(), keys["rsa"].identity()]
    with tempfile.TemporaryDirectory() as d:
        env = Path(d) / "env"
        env.write_bytes(data)
        dst = Path(d) / "out"
        with contextlib.suppress(TokenKeysError):
            describe_recipients(env)
        tracemalloc.start()
        try:
            open_envelope(env, dst, identities)
        except TokenKeysError as exc:
            assert sorted(p.name for p in Path(d).iterdir()) == ["env"]
            # Messages say what happened, never which Python exception did.
            assert not re.search(r"\b[A-Za-z]+(Error|Exception)\b", str(exc)), str(exc)
        else:
            # EnvelopedData/CBC (corpus[1]) is malleable by design: IV or ciphertext
            # flips can yield other bytes with valid padding. Authenticated ones cannot.
            assert dst.read_bytes() == PLAINTEXT or which == 1
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        # Inputs here are at most ~1 MB: bounded framing keeps the peak far below 64 MB.
        assert peak < 32 << 20, f"{peak >> 20} MB traced"
