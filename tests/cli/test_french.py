"""tokenkeys in French: every command's help and the main error paths show no English
sentence of the catalog, and the errors that matter most read exactly right."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from cryptography.hazmat.primitives.asymmetric import padding

from tests.cli.conftest import TK
from tests.cli.share_support import PIN as SOFT_PIN
from tests.cli.share_support import soft_store
from tests.drivers.fakeport import FakeDevice, FakePort
from tests.registry.conftest import soft_facts
from tokenkeys.config import Config
from tokenkeys.drivers import Token, open_token
from tokenkeys.drivers.p11 import removal as p11_removal
from tokenkeys.drivers.p11.token import P11Token
from tokenkeys.envelope import SealOptions, open_envelope, seal
from tokenkeys.errors import (
    DeviceRemoved,
    EnvelopeIntegrity,
    NoMatchingRecipient,
    PinIncorrect,
    PinLocked,
    PolicyRefused,
)
from tokenkeys.i18n import language
from tokenkeys.registry import Registry
from tokenkeys.services import consultations, key_inventory, keys, token_keys
from tokenkeys.types import Algorithm, PinSource, Secret, given_pin

ROOT = Path(__file__).resolve().parents[2]
FR = {"LANG": "fr_FR.UTF-8"}


def english_sentences() -> list[str]:
    """Catalog sentences (three words or more) whose French differs: none of them may
    show in French output. Whitespace is normalised, as help text is re-wrapped."""
    with (ROOT / "tokenkeys/locale/fr/LC_MESSAGES/tokenkeys.po").open("rb") as f:
        catalog = read_po(f)
    out = []
    for m in catalog:
        if not m.id:
            continue
        for source, text in ([(m.id, m.string)] if isinstance(m.id, str)
                             else list(zip(m.id, m.string, strict=False))):
            # The fixed text between placeholders, when it is a phrase of its own.
            for piece in "\x00".join(source.replace("}", "{").split("{")[::2]).split("\x00"):
                piece = " ".join(piece.split())
                if len(piece.split()) >= 3 and piece not in " ".join(text.split()):
                    out.append(piece)
    return sorted(set(out))


ENGLISH = english_sentences()


def english_in(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [s for s in ENGLISH if s in flat]


HELP_SCRIPT = """
import contextlib, io, json, sys
import click
from tokenkeys.cli import main
out = {}
def walk(path, command):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main.main([*path, "--help"])
    out[" ".join(path) or "tokenkeys"] = buffer.getvalue()
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            walk([*path, name], command.get_command(ctx, name))
walk([], main.cli)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}, **FR}
    done = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True,
                          env=env, check=True, timeout=120)
    return dict(json.loads(done.stdout))


def test_every_help_is_french(helps: dict[str, str]) -> None:
    assert len(helps) > 40  # every group and subcommand
    found = {name: english_in(text) for name, text in helps.items()}
    assert {name: words for name, words in found.items() if words} == {}
    assert all(text.startswith("Utilisation :") for text in helps.values())
    assert "Générer un bi-clé sur le support" in helps["key generate"]
    assert "Afficher ce message et quitter." in helps["key generate"]


ERROR_PATHS = [
    (["key", "list", "--nope"], 2, "Pas d'option '--nope'."),
    (["consultation", "create", "AO-1"], 2, "Option manquante '--key'."),
    (["consultation", "show", "NOPE"], 13, "consultation inconnue 'NOPE' dans le service"),
    (["key", "generate", "--name", "X"], 2, "aucun support indiqué"),
    (["service", "list", "--service", "x"], 2, "Pas d'option '--service'"),
    (["open", "/nonexistent/plis", "-o", "/tmp/x"], 2, "aucun fichier ni dossier de plis"),
    (["seal", "/etc/hostname", "-o", "/tmp/never.p7m"], 2, "donnez --recipient"),
    (["key", "generate", "--name", "X", "--token", "soft:/nonexistent/ks"], 3,
     "aucun magasin logiciel dans /nonexistent/ks"),
    (["nope"], 2, "Pas de commande 'nope'."),
]


@pytest.mark.parametrize(("args", "code", "french"), ERROR_PATHS)
def test_main_error_paths_are_french(tk: TK, args: list[str], code: int, french: str) -> None:
    run = tk(*args, env=FR)
    assert run.code == code, run.err
    assert run.err.startswith("tokenkeys : erreur : ") and french in run.err, run.err
    assert english_in(run.err) == []


def test_json_message_follows_the_language_and_keys_stay_english(tk: TK) -> None:
    run = tk("--json", "consultation", "show", "NOPE", env=FR)
    error = json.loads(run.out)["error"]
    assert error["type"] == "ConsultationNotFound" and error["exit_code"] == 13
    assert error["message"] == "consultation inconnue 'NOPE' dans le service 'default'"


# --- the errors that matter, word for word ----------------------------------------
@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> FakeDevice:
    monkeypatch.setattr(p11_removal, "GONE_WAIT_S", 0.0)
    return FakeDevice()


def _login_error(device: FakeDevice) -> str:
    port = FakePort(device)
    with language("fr"), pytest.raises((PinIncorrect, PinLocked)) as caught:
        P11Token(port, port.token(0)).login(given_pin(Secret("999999")))
    return str(caught.value)


def test_wrong_pin_tries_final_try_and_locked_card(device: FakeDevice) -> None:
    """Through the real PKCS#11 token code, over a fake port that answers like cards do."""
    never = "tokenkeys ne réessaie jamais un code PIN de lui-même"
    device.login_answer = "CKR_PIN_INCORRECT"
    assert _login_error(device) == (
        f"Code PIN incorrect (le support ne dit pas combien d'essais restent) ; {never}")
    device.manufacturer = "OpenPGP project"  # a card that only reports the final try
    device.login_answer = "CKR_USER_NOT_LOGGED_IN"
    assert _login_error(device) == ("Code PIN incorrect (plus d'un essai restant ; cette carte "
                                     f"ne signale que le dernier essai) ; {never}")
    device.flags |= 0x10000
    assert _login_error(device) == f"Code PIN incorrect (compteur d'essais bas) ; {never}"
    device.flags |= 0x20000
    assert _login_error(device) == f"Code PIN incorrect (dernier essai) ; {never}"
    device.login_answer = "CKR_PIN_INCORRECT"
    device.flags |= 0x40000
    assert _login_error(device) == "code PIN bloqué : le responsable sécurité doit le débloquer"
    with language("fr"):
        assert str(PinIncorrect(1)) == f"Code PIN incorrect (1 essai restant) ; {never}"
        assert str(PinIncorrect(3)) == f"Code PIN incorrect (3 essais restants) ; {never}"


def test_card_removed(device: FakeDevice) -> None:
    port = FakePort(device)
    with P11Token(port, port.token(0)) as tok:
        tok.login(given_pin(Secret("123456")))
        token_keys.generate_key(tok, "bid", algorithm=Algorithm.RSA2048)
        key = tok.find_key(label="bid")
        ct = key.public_key.encrypt(b"k" * 32, padding.PKCS1v15())  # type: ignore[union-attr]
        device.failures["decrypt"] = ("CKR_DEVICE_REMOVED", 0)
        with language("fr"), pytest.raises(DeviceRemoved) as caught:
            key.decrypt(ct, padding.PKCS1v15())
    assert str(caught.value) == (
        "déchiffrement avec 'bid' : la carte a été retirée de son lecteur (ou le support a été "
        "réinitialisé) : insérez-la et relancez la commande")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return soft_store(tmp_path / "ks", ("BICLE", "ec-p256", False), ("AUTRE", "ec-p256", False))


def test_damaged_pli_and_pli_for_another_key(store: str, tmp_path: Path) -> None:
    with open_token(store, Config()) as token:
        token.login(PinSource(value=Secret(SOFT_PIN), interactive=False))
        mine, other = token.find_key(label="BICLE"), token.find_key(label="AUTRE")
        assert mine.certificate is not None and other.certificate is not None
        sealed = tmp_path / "offre.p7m"
        seal(io.BytesIO(b"offre " * 1000), sealed, [mine.certificate], SealOptions())
        damaged = bytearray(sealed.read_bytes())
        damaged[-40] ^= 1
        (tmp_path / "abime.p7m").write_bytes(bytes(damaged))
        with language("fr"):
            with pytest.raises(EnvelopeIntegrity) as caught:
                open_envelope(tmp_path / "abime.p7m", tmp_path / "out", [mine])
            assert str(caught.value) == ("échec du contrôle d'intégrité du contenu (pli "
                                         "endommagé ou mauvais bi-clé)")
            with pytest.raises(NoMatchingRecipient) as refused:
                open_envelope(sealed, tmp_path / "out2", [other])
    assert str(refused.value).startswith(
        "aucun destinataire de ce pli ne correspond aux bi-clés essayés (")
    assert "; il est adressé à : " in str(refused.value)


def _in_days(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).strftime("%Y-%m-%d")


def test_binding_refused_deletion_refused_key_expired(store: str, tmp_path: Path) -> None:
    registry = str(tmp_path / "registry.sqlite")
    with Registry.open(registry) as reg, language("fr"):
        long_ago = datetime.now(UTC) - timedelta(days=400)
        old = soft_facts("ANCIEN", days=30, start=long_ago)
        reg.add_key("default", old, "adopt")
        with pytest.raises(PolicyRefused) as expired:
            consultations.create(reg, "default", "AO-0", "ANCIEN", closes=None, title=None,
                                 no_backup=True)
        ended = reg.key("default", "ANCIEN").not_after
        assert str(expired.value) == (
            f"le bi-clé 'ANCIEN' a expiré le {ended} : un bi-clé expiré ne peut pas être "
            "affecté (renouvelez-le : `tokenkeys key renew`)")
        key_inventory.generate(reg, "default", lambda: _session(store), "BICLE-A",
                               algorithm=Algorithm.EC_P256, days=90)
        key_inventory.generate(reg, "default", lambda: _session(store), "SECOURS",
                               algorithm=Algorithm.EC_P256, days=365, backup=True)
        with pytest.raises(PolicyRefused) as backup:
            consultations.create(reg, "default", "AO-1", "SECOURS", closes=None, title=None,
                                 no_backup=False)
        assert str(backup.value) == (
            "le bi-clé 'SECOURS' est un bi-clé de secours : les bi-clés de secours sont ajoutés "
            "à chaque consultation, affectez un bi-clé ordinaire")
        consultations.create(reg, "default", "AO-2", "BICLE-A", closes=_in_days(30),
                             title=None, no_backup=False)
        with _session(store) as token, pytest.raises(PolicyRefused) as kept:
            keys.delete(reg, token, token.find_key(label="BICLE-A"))
    assert str(kept.value) == (
        "le bi-clé 'BICLE-A' est affecté à des consultations non clôturées (AO-2), comme "
        "leur bi-clé ou comme bi-clé de secours enregistré, et c'est sa dernière copie : leurs "
        "plis ne peuvent être ouverts qu'avec lui. Clôturez-les d'abord")


@contextmanager
def _session(store: str) -> Iterator[Token]:
    with open_token(store, Config()) as token:
        token.login(PinSource(value=Secret(SOFT_PIN), interactive=False))
        yield token
