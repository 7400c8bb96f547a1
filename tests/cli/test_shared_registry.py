"""Two workstations, each with its own SoftHSM2 token store, share one PostgreSQL registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.cli.conftest import TK, Run
from tests.conftest import ROOT
from tests.pgcluster import OFFICER_PASSWORD


def test_two_workstations_share_one_postgresql_registry(
        tk: TK, softhsm: Any, pg_cluster: Any, tmp_path: Path, cli_env: dict[str, str]) -> None:
    url = pg_cluster.tcp_url(pg_cluster.new_database())
    shared = {"TOKENKEYS_REGISTRY": url, "PGPASSWORD": OFFICER_PASSWORD}
    ws2_dir = tmp_path / "ws2"
    done = subprocess.run([str(ROOT / "softhsm-config" / "setup-tokens.sh"), str(ws2_dir),
                           "poste2"], env={**cli_env, "PYTHON": sys.executable},
                          capture_output=True, text=True, check=True)
    ws2_conf = done.stdout.strip().split("=", 1)[1]

    def ws1(*args: str | Path) -> Run:
        return tk(*args, env=shared)

    def ws2(*args: str | Path) -> Run:
        return tk(*args, env={**shared, "SOFTHSM2_CONF": ws2_conf})

    uri1 = softhsm.uri(softhsm.new_token("poste1"))
    uri2 = softhsm.uri("poste2")
    for run in (ws1("key", "generate", "--token", uri1, "--name", "BICLE", "--algorithm",
                    "rsa2048"),
                ws2("key", "generate", "--token", uri2, "--name", "SECOURS", "--backup",
                    "--algorithm", "rsa2048"),
                ws1("consultation", "create", "AO-PARTAGE", "--key", "BICLE")):
        assert run.code == 0, run.err
    # The second workstation lists the consultation and seals to it.
    listed = ws2("--json", "consultation", "list")
    assert [c["reference"] for c in listed.json["consultations"]] == ["AO-PARTAGE"]
    assert listed.json["consultations"][0]["backups"][0]["designation"] == "SECOURS"
    bid = tmp_path / "offre.txt"
    bid.write_text("offre\n")
    env = tmp_path / "plis" / "offre.txt.p7m"
    assert ws2("seal", bid, "-o", env, "--consultation", "AO-PARTAGE").code == 0
    # Each workstation opens it with its own token: the bound key here, the backup there.
    for run_on, uri, out in ((ws1, uri1, "o1"), (ws2, uri2, "o2")):
        opened = run_on("--json", "open", env, "-o", tmp_path / out, "--token", uri,
                        "--consultation", "AO-PARTAGE")
        assert opened.code == 0 and opened.json["opened"] == 1, opened.err + opened.out
    # The second store does not hold the first's token: the key is not there.
    assert ws2("key", "list", "--token", uri1).code == 3
    verified = ws2("--json", "audit", "verify")
    # generate x2, consultation-create, then open-start and open for each opening.
    assert verified.code == 0 and verified.json["rows"] == 7
    for run in (listed, verified):
        assert OFFICER_PASSWORD not in run.out + run.err
