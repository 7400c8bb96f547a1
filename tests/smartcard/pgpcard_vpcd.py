#!/usr/bin/env python3
"""Bridge: pure-Python OpenPGP card (PyPI smartcard-app-openpgp) <-> vsmartcard vpcd.

vpcd protocol: TCP to pcscd's vpcd (default localhost:35963); every message is a
2-byte big-endian length + payload. 1-byte payloads are control codes
(0 power off, 1 power on, 2 reset, 4 get ATR); anything else is a C-APDU,
answered with the R-APDU.

Runs in .venv-emu at the repository root (scard.sh setup), not in the project venv.
Adapted from the reference harness; the workarounds are described in
docs/smartcard.md.
"""
import argparse
import logging
import socket
import struct
import sys
import time

import smartcard.app.openpgp as _pgp
import ZODB
import ZODB.DB
import ZODB.FileStorage
from smartcard import MASTER_FILE_IDENTIFIER, Card
from smartcard.app.openpgp import OpenPGP
from smartcard.utils import transaction_manager


def _getAlgorithmInformation(self):
    # smartcard-app-openpgp 0.4.0 bug: it re-encodes already-encoded attribute
    # bytes (TypeError -> 6F00). Emit C1/C2/C3 TLVs per OpenPGP 3.4 DO FA.
    out = b''
    for role in (_pgp.KEY_ROLE_SIGN, _pgp.KEY_ROLE_DECRYPT, _pgp.KEY_ROLE_AUTHENTICATE):
        tag = 0xC0 | _pgp.KEY_ROLE_TO_ATTRIBUTE_TAG_DICT[role].identifier
        for attr in _pgp.ROLE_TO_SUPPORTED_ALGORITHM_INFORMATION_LIST_DICT[role]:
            out += bytes((tag, len(attr))) + attr
    return (out,)


_pgp.OpenPGP._getAlgorithmInformation = _getAlgorithmInformation

_orig_genkey = _pgp.OpenPGP.generateAsymmetricKeyPair


def _generateAsymmetricKeyPair(self, channel, p1, p2, command_data):
    # The emulator pre-generates keys in a background thread and answers
    # 6F00 ("key not ready yet") if GENERATE arrives before it is done (e.g.
    # right after OpenSC changed the algorithm attributes). Wait instead.
    if p1 == 0x80:
        try:
            (tag, _), = list(_pgp.CodecBER.iterDecode(
                value=command_data, schema=_pgp.CONTROL_REFERENCE_SCHEMA))
            index = _pgp.KEY_ROLE_TO_INDEX_DICT[_pgp.KEY_TAG_TO_ROLE_DICT[tag]]
            deadline = time.time() + 120
            while self._v_s_keygen_key_list[index] is None and time.time() < deadline:
                time.sleep(0.05)
        except Exception:
            pass
    return _orig_genkey(self, channel, p1, p2, command_data)


_pgp.OpenPGP.generateAsymmetricKeyPair = _generateAsymmetricKeyPair


def make_card(path):
    # path=None -> in-memory MappingStorage (fresh card every start)
    storage = ZODB.FileStorage.FileStorage(path) if path else None
    db = ZODB.DB(storage, pool_size=1)
    conn = db.open(transaction_manager=transaction_manager)
    root = conn.root
    try:
        card = root.card
    except AttributeError:
        with transaction_manager:
            card = root.card = Card(name=b'py-openpgp')
            app = OpenPGP(identifier=b'\x12\x34')
            app.activateSelf()
            card.createFile(card.traverse((MASTER_FILE_IDENTIFIER,)), app)
    return card


def recv_exact(sock, n):
    buf = b''
    while len(buf) < n:
        # vpcd writes the 2-byte length and the APDU separately without
        # TCP_NODELAY; ACK at once so its Nagle does not wait for our
        # delayed ACK (~40 ms per APDU otherwise). Linux-only option.
        if hasattr(socket, 'TCP_QUICKACK'):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--host', default='localhost')
    p.add_argument('--port', type=int, default=35963)
    p.add_argument('--storage', default=None, help='ZODB FileStorage path (default: in-memory)')
    p.add_argument('-v', action='store_true')
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.v else logging.WARNING)
    card = make_card(a.storage)
    atr = card.getATR()
    sock = socket.create_connection((a.host, a.port))
    # without this every APDU round trip costs ~40 ms (Nagle + delayed ACK)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(m: bytes) -> None:
        sock.sendall(struct.pack('!H', len(m)) + m)

    try:
        while True:
            (n,) = struct.unpack('!H', recv_exact(sock, 2))
            msg = recv_exact(sock, n) if n else b''
            if n == 1:
                if msg[0] == 4:
                    send(bytes(atr))
                elif msg[0] in (0, 1, 2):   # off / on / reset: drop PIN state etc.
                    with transaction_manager:
                        card.clearVolatile()
            elif n >= 4 and msg[1] == 0xA5:
                # SELECT DATA (OpenPGP 3.x) is not implemented by the emulator;
                # OpenSC >= 0.20 uses it to walk cardholder-certificate
                # instances and aborts PKCS#15 emulation on any error (6D00,
                # 6A88). Acknowledge; the emulator's single (empty) 7F21 is
                # then read for every instance.
                send(b'\x90\x00')
            elif n:
                send(bytes(card.runAPDU(bytearray(msg))))
    except (EOFError, ConnectionError):
        return 0


if __name__ == '__main__':
    sys.exit(main())
