"""Read a public key in a fresh process: `python -m tokenkeys.drivers.p11.reread
BINDING MODULE SERIAL IDHEX` prints its SubjectPublicKeyInfo (hex).

OpenSC 0.23 returns heap bytes after the modulus in the process that generated
the key (docs/drivers.md); a new process reads it correctly. No PIN is involved: the
parent starts it without secrets in its environment (provision.child_environment).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cryptography.hazmat.primitives import serialization

from tokenkeys.drivers.p11 import ck, discovery
from tokenkeys.drivers.p11.keys import read_public_key
from tokenkeys.i18n import _


def main(argv: Sequence[str]) -> int:
    binding, module, serial, id_hex = argv
    port = discovery.port_for(module, binding)
    for st in discovery.scan(port):
        if st.serial != serial:
            continue
        session = port.open_session(st.slot, rw=False)
        query = {ck.CKA_CLASS: ck.CKO_PUBLIC_KEY, ck.CKA_ID: bytes.fromhex(id_hex)}
        for obj in session.find(query):
            key = read_public_key(session, obj)
            if key is not None:
                print(key.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).hex())
                return 0
    print(_("no readable public key {id_hex} on token {serial}")
          .format(id_hex=id_hex, serial=serial), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
