"""A batch in one session: the device's calls in a process of their own.

In one process, a device thread calls C_Decrypt while other threads parse, decrypt
AES and write; but after each call the device thread must take the GIL back from
them, and each call came out 0.5 ms longer than in a bare loop (docs/benchmarks.md).
Here a child, forked before any thread exists (as the --jobs workers), opens the
token once the parent has logged in, logs in with the PIN the parent read (through
a pipe, never argv) and answers decryption requests. The parent's threads keep
several requests queued, so the device is never idle while they do the rest.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from tokenkeys.config import Config
from tokenkeys.drivers import KeyHandle
from tokenkeys.errors import DeviceError, KeyNotFound, TokenKeysError
from tokenkeys.i18n import _
from tokenkeys.services.crossing import described, rebuilt
from tokenkeys.types import PinSource

# The child costs about 50 ms (its fork, its token opening and login) and saves about
# 0.3 ms per envelope: below this many, a batch is faster without it
# (tests/benchmarks/bench_device_process.py; docs/benchmarks.md).
MIN_ENVELOPES = 150
_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1, "secp384r1": ec.SECP384R1, "secp521r1": ec.SECP521R1}


class RemoteKey:
    """An envelope Identity whose device operations the device process performs."""

    def __init__(self, device: DeviceProcess, index: int, key: KeyHandle) -> None:
        self._device, self._index = device, index
        self.label: str = key.label
        self.public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = key.public_key
        self.certificate: x509.Certificate | None = key.certificate

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        return self._device.call("decrypt", self._index, ciphertext, padding)

    def derive_ecdh(self, peer_public: ec.EllipticCurvePublicKey) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        point = peer_public.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return self._device.call("derive", self._index, peer_public.curve.name, point)


class DeviceProcess:
    """The child, started now (fork); start() logs it in once the parent has."""

    def __init__(self, token_uri: str, config: Config) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(token_uri, config, child, self._conn),
                                    name="tokenkeys-device", daemon=True)
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        self._waiting: dict[int, Future[bytes]] = {}
        self._ids = itertools.count()
        self._broken: Exception | None = None

    def start(self, pins: PinSource, keys: Sequence[KeyHandle]) -> list[RemoteKey]:
        """Log the child in and find `keys` (the parent's) in its session."""
        try:
            self._conn.send(("login", pins, [(k.id, k.label) for k in keys]))
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise self._stopped() from None
        if reply[0] != "ok":
            raise rebuilt(*reply[1:])
        threading.Thread(target=self._replies, name="tokenkeys-device-replies",
                         daemon=True).start()
        return [RemoteKey(self, i, k) for i, k in enumerate(keys)]

    def call(self, op: str, *args: Any) -> bytes:
        future: Future[bytes] = Future()
        with self._lock:
            if self._broken is not None:
                raise self._broken
            n = next(self._ids)
            self._waiting[n] = future
            try:
                self._conn.send((n, op, *args))
            except OSError:
                del self._waiting[n]
                raise self._stopped() from None
        return future.result()

    def _replies(self) -> None:
        try:
            while True:
                n, ok, value = self._conn.recv()
                with self._lock:
                    future = self._waiting.pop(n)
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(rebuilt(*value))
        except (EOFError, OSError):
            with self._lock:
                self._broken = self._stopped()
                waiting, self._waiting = self._waiting, {}
            for future in waiting.values():
                future.set_exception(self._broken)

    @staticmethod
    def _stopped() -> DeviceError:
        return DeviceError(_("the device process stopped during the batch; "
                             "run the command again"))

    def close(self) -> None:
        """Tell the child to log out and leave; kill it if it has not within two seconds
        (a device call that hangs). Its end closing ends the reply thread. (Closing our
        end instead would not reach the child while that thread reads from it.)"""
        with self._lock, contextlib.suppress(OSError):
            self._conn.send(None)
        self._process.join(2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _serve(uri: str, config: Config, conn: Any, parents_end: Any) -> None:
    """The child: wait for the login, then answer requests until the pipe closes."""
    parents_end.close()  # or the parent closing its end would not end the pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    parent = os.getppid()
    while not conn.poll(0.2):
        if os.getppid() != parent:  # killed during its login: no batch will come
            return
    try:
        request = conn.recv()
    except EOFError:
        return
    if request is None:  # closed before the login (the parent's failed)
        return
    _, pins, wanted = request
    from tokenkeys.services.opening_workers import open_in_worker

    try:
        token = open_in_worker(uri, config)
    except TokenKeysError as exc:
        conn.send(("error", *described(exc)))
        return
    with token:
        try:
            token.login(pins)
            found = {(k.id, k.label): k for k in token.list_keys()}
            missing = [label for key_id, label in wanted if (key_id, label) not in found]
            if missing:
                raise KeyNotFound(_("key {label!r} is gone from the token")
                                  .format(label=missing[0]))
            conn.send(("ok",))
        except TokenKeysError as exc:
            conn.send(("error", *described(exc)))
            return
        _answer(conn, [found[w] for w in wanted])


def _answer(conn: Any, keys: list[KeyHandle]) -> None:
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:  # DeviceProcess.close
            return
        n, op, index, *args = request
        try:
            if op == "decrypt":
                value = keys[index].decrypt(*args)
            else:
                curve, point = args
                peer = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve](), point)
                value = keys[index].derive_ecdh(peer)
            conn.send((n, True, value))
        except Exception as exc:
            conn.send((n, False, described(exc)))
