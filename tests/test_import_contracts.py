"""The layering contracts (pyproject.toml, [tool.importlinter]) hold, and each one breaks
when a forbidden import is added: run on a copy of the package with one import more."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
# A contract's name, and an import that must break it: (module file, line added).
BREAKS = {
    "The faces reach the library": ("cli/main.py", "import tokenkeys.envelope.seal"),
    "The envelope and the registry never import drivers": (
        "registry/schema.py", "import tokenkeys.drivers.base"),
    "The drivers never import the envelope": ("drivers/oaep.py", "import tokenkeys.envelope.seal"),
    "Layers": ("services/access.py", "import tokenkeys.cli.context"),
    "No package imports another": ("drivers/base.py", "import tokenkeys.services.sealing"),
}

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_contracts_hold() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


@pytest.mark.parametrize("contract", list(BREAKS))
def test_each_contract_breaks_on_a_forbidden_import(contract: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "tokenkeys", tmp_path / "tokenkeys",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    module, line = BREAKS[contract]
    target = tmp_path / "tokenkeys" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n",
                      encoding="utf-8")
    done = _lint(tmp_path)
    assert done.returncode != 0
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, done.stdout[-3000:]
