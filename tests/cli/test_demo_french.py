"""`.ci/demo` with LANG=fr_FR.UTF-8: what the person reading it sees is French, apart from
names, URIs, JSON and the openssl lines. The demo's tokenkeys steps (everything after its
`set -x`) run here as they are written, on a fresh SoftHSM2 token; `.ci/demo` itself also
installs the machine, which a test does not do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_french import english_in

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.softhsm
@pytest.mark.openssl
def test_the_demo_runs_in_french(softhsm: Any, tmp_path: Path) -> None:
    demo = (ROOT / ".ci" / "demo").read_text()
    steps = demo.split("\nset -x\n", 1)[1].split("\nset +x\n", 1)[0]
    script = (f'set -euo pipefail\ntokenkeys() {{ "{sys.executable}" -m tokenkeys "$@"; }}\n'
              f"{steps}\n")
    label = softhsm.new_token("demo")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TOKENKEYS_", "LC_", "LANG"))}
    env.update({"LANG": "fr_FR.UTF-8", "OUT": str(tmp_path), "URI": softhsm.uri(label),
                "TOKENKEYS_PIN": "123456", "TOKENKEYS_SO_PIN": "12345678",
                "TOKENKEYS_REGISTRY": str(tmp_path / "registry.sqlite"),
                "SOFTHSM2_CONF": str(softhsm.conf), "XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          timeout=240, cwd=ROOT)
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown
    # Every kind of line the demo prints, in French.
    for french in ("désignation", "fin de validité", "1 pli ouvert", "chaîne d'audit valide",
                   "affectée au bi-clé 'BICLE-DEMO'", "est affecté à des consultations non "
                   "clôturées (AO-DEMO)", "tokenkeys : erreur : ",
                   "refusé, comme il se doit"):
        assert french in shown, (french, shown)
    assert english_in(shown) == []
