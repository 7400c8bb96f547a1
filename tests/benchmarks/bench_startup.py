"""CLI start-up, side by side in one run, interleaved so that the machine's noise hits
every row alike:

- `tokenkeys --help` against the floor of this stack
  (`python -c "import click, cryptography.x509, rich"`), in CPU seconds, in English and
  in French (LANG=fr_FR.UTF-8: the catalog is loaded, help texts translated);
- `tokenkeys key list` on a SoftHSM2 token with its registry against the same floor
  and `pkcs11-tool -O`, in wall seconds;
- `tokenkeys audit verify`, which opens the registry;
- the interpreter's exit after `audit verify`, with and without the gc.freeze() that
  cli.main.entry does (the time from the command's end to the process's end).

Run: .venv/bin/python tests/benchmarks/bench_startup.py [N]
A throwaway SoftHSM2 token is set up in a temporary directory (PIN in the environment).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_raw_decrypt import SOFTHSM, _throwaway

FLOOR = "import click, cryptography.x509, rich"


# Runs in another language than the others (LANG=C.UTF-8).
LANGS = {"tokenkeys --help (French: LANG=fr_FR.UTF-8)": "fr_FR.UTF-8"}


def run(args: list[str], env: dict[str, str], name: str = "") -> tuple[float, float]:
    """(wall, CPU) seconds of one run of `args`."""
    env = {**env, "LANG": LANGS.get(name, "C.UTF-8")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, env=env, capture_output=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


EXIT_PROBE = """import contextlib, gc, io, sys, time
from tokenkeys.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main.main(["audit", "verify"])
if FREEZE:
    gc.freeze()
print(time.monotonic(), file=sys.stderr)
"""


def exit_time(freeze: bool, env: dict[str, str]) -> float:
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE.replace("FREEZE", str(freeze))],
                          env=env, capture_output=True, text=True, check=True)
    return time.monotonic() - float(done.stderr.strip().splitlines()[-1])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    pin = "123456"
    os.environ["TOKENKEYS_PIN"] = pin
    token_label, _key = _throwaway(pin)
    tk = [sys.executable, "-m", "tokenkeys"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TOKENKEYS_REGISTRY": os.path.join(tmp, "r.sqlite"),
               "TOKENKEYS_TOKEN": f"pkcs11:token={token_label}?module-path={SOFTHSM}"}
        subprocess.run([*tk, "service", "create", "bench"], env=env, check=True,
                       capture_output=True)
        subprocess.run([*tk, "key", "generate", "--name", "BICLE-BENCH", "--service", "bench",
                        "--algorithm", "rsa2048"], env=env, check=True, capture_output=True)
        runs = {
            "floor: python -c 'import click, cryptography.x509, rich'":
                [sys.executable, "-c", FLOOR],
            "tokenkeys --help": [*tk, "--help"],
            "tokenkeys --help (French: LANG=fr_FR.UTF-8)": [*tk, "--help"],
            "tokenkeys key list (SoftHSM2, registry)": [*tk, "key", "list"],
            "pkcs11-tool -O": ["pkcs11-tool", "--module", SOFTHSM, "--token-label",
                               token_label, "-O"],
            "tokenkeys audit verify (registry)": [*tk, "audit", "verify"],
        }
        walls: dict[str, list[float]] = {name: [] for name in runs}
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        exits: dict[bool, list[float]] = {False: [], True: []}
        for name, args in runs.items():  # warm the caches once
            run(args, env, name)
        for _ in range(n):
            for name, args in runs.items():
                wall, cpu = run(args, env, name)
                walls[name].append(wall)
                cpus[name].append(cpu)
            for freeze in exits:
                exits[freeze].append(exit_time(freeze, env))
    med_wall = {k: statistics.median(v) for k, v in walls.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    floor = next(iter(runs))
    print(f"| what (n={n}, interleaved) | wall s (median) | CPU s (median) |"
          " wall / floor | CPU / floor |\n|---|---|---|---|---|")
    for name in runs:
        print(f"| {name} | {med_wall[name]:.3f} | {med_cpu[name]:.3f} | "
              f"{med_wall[name] / med_wall[floor]:.2f}x | {med_cpu[name] / med_cpu[floor]:.2f}x |")
    print(f"\n| exit after `audit verify` (n={n}) | seconds (median) |\n|---|---|")
    for freeze, label in ((False, "plain exit"), (True, "after gc.freeze() (cli.main.entry)")):
        print(f"| {label} | {statistics.median(exits[freeze]):.3f} |")


if __name__ == "__main__":
    main()
