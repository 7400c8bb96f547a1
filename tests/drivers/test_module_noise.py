"""A module's own diagnostics at C_Initialize never reach the user's terminal: on a
machine with tpm2-pkcs11 installed but no TPM, every token scan printed a dozen TSS
error lines before tokenkeys' own answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TPM2 = Path("/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so")


@pytest.mark.skipif(not TPM2.exists(), reason="tpm2-pkcs11 is not installed")
def test_a_module_that_complains_at_initialisation_is_quiet(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TSS2_", "TPM2_PKCS11", "TOKENKEYS_", "SOFTHSM2_CONF"))}
    env.update({"HOME": str(tmp_path), "TOKENKEYS_REGISTRY": str(tmp_path / "r.sqlite"),
                "TPM2_PKCS11_TCTI": "swtpm:host=127.0.0.1,port=1"})  # no TPM there
    args = [sys.executable, "-m", "tokenkeys", "token", "list"]
    quiet = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert "tcti" not in quiet.stderr.lower() and "tpm ctx" not in quiet.stderr, quiet.stderr
    told = subprocess.run([*args[:3], "--debug", *args[3:]], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "wrote while initialising" in told.stderr and "tcti" in told.stderr.lower()
