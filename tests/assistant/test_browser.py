"""The demo platform and the assistant in a real browser: Debian's Chromium, headless,
driven by Selenium through Debian's chromedriver (nothing is downloaded).

The demo platform is served on one loopback origin, the assistant on another. The
page detects the assistant, pairs with the code the assistant's window shows in a
second tab, creates key pairs on SoftHSM2 after approval (PIN typed in the
assistant's window), lists them with their certificates, and opens envelopes made
by `openssl cms` (OAEP and PKCS#1 v1.5) and `tokenkeys seal --consultation`.
Screenshots of each step are kept in TOKENKEYS_TEST_ARTEFACTS (default: the test's
temporary directory, printed on failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.assistant.conftest import free_port, served
from tests.conftest import ROOT, SoftHSM
from tokenkeys.assistant import demo
from tokenkeys.assistant.server import build
from tokenkeys.assistant.settings import Settings
from tokenkeys.assistant.state import Assistant
from tokenkeys.config import Config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PIN = "123456"

pytestmark = [
    pytest.mark.softhsm,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="Debian's chromium and chromium-driver are not installed"),
]


@dataclass
class Scene:
    driver: Any
    assistant: Assistant
    assistant_url: str
    platform_url: str
    config: Config
    softhsm: SoftHSM
    label: str
    shots: Path
    count: int = 0

    def shot(self, name: str) -> Path:
        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, condition: Any, timeout: float = 20) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition)

    def by_id(self, name: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, name)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def approve_in_assistant(self, tabs: dict[str, str], shot: str, pin: str = PIN) -> str:
        """Switch to the assistant's window, type the PIN, approve; back to the platform."""
        self.driver.switch_to.window(tabs["assistant"])
        self.wait(lambda _d: self.css(".approval .approve"))
        [box] = self.css(".approval")
        text: str = box.find_element("css selector", "p.text").text
        box.find_element("css selector", "input.pin").send_keys(pin)
        self.shot(shot)
        box.find_element("css selector", "button.approve").click()
        self.wait(lambda _d: not self.css(".approval"))
        self.driver.switch_to.window(tabs["platform"])
        return text


@pytest.fixture(scope="module")
def scene(softhsm: SoftHSM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    base = tmp_path_factory.mktemp("browser")
    shots = Path(os.environ.get("TOKENKEYS_TEST_ARTEFACTS") or base / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    label = softhsm.new_token("browser")
    config = Config(token=softhsm.uri(label), registry=str(base / "registry.sqlite"))
    port, demo_port = free_port(), free_port()
    platform = f"http://127.0.0.1:{demo_port}"
    settings = Settings(port=port, origins=(platform,), pairings=base / "pairings.json",
                        workdir=base / "work", approval_timeout=30.0)
    app, assistant = build(settings, config)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1100,900", "--lang=en"):
        options.add_argument(arg)
    with served(app, port) as url, served(demo.build(url), demo_port):
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield Scene(driver, assistant, url, platform, config, softhsm, label, shots)
        finally:
            driver.quit()
    print(f"browser screenshots: {shots}")


def _generate(s: Scene, tabs: dict[str, str], name: str, *, backup: bool) -> str:
    s.by_id("designation").clear()
    s.by_id("designation").send_keys(name)
    if s.by_id("backup").is_selected() != backup:
        s.by_id("backup").click()
    s.by_id("generate").click()
    text = s.approve_in_assistant(tabs, f"approve-{name.lower()}")
    s.wait(lambda _d: name in s.by_id("generate-result").text)
    return text


def _envelopes(s: Scene, work: Path, env: dict[str, str]) -> dict[str, bytes]:
    """Three bids for 2026-AO-001: openssl cms OAEP, openssl cms v1.5, tokenkeys seal."""
    bundle = work / "recipients.pem"
    tk = [sys.executable, "-m", "tokenkeys"]
    subprocess.run([*tk, "consultation", "recipients", "2026-AO-001", "-o", str(bundle)],
                   env=env, check=True, capture_output=True)
    pem = bundle.read_text()
    certs = []
    for i, block in enumerate(pem.split("-----END CERTIFICATE-----")[:-1]):
        path = work / f"cert{i}.pem"
        path.write_text(block.strip() + "\n-----END CERTIFICATE-----\n")
        certs.append(path)
    bids = {"oaep.pdf": b"bid sealed by openssl cms, RSA-OAEP\n",
            "v15.pdf": b"bid sealed by openssl cms, PKCS#1 v1.5\n",
            "tokenkeys.pdf": b"bid sealed by tokenkeys seal --consultation\n"}
    for name, data in bids.items():
        (work / name).write_bytes(data)
    recips: list[str] = []
    for cert in certs:
        recips += ["-recip", str(cert), "-keyopt", "rsa_padding_mode:oaep"]
    subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-aes256", "-outform", "DER",
                    "-in", str(work / "oaep.pdf"), "-out", str(work / "oaep.pdf.p7m"),
                    *recips], check=True, capture_output=True)
    subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-aes256", "-outform", "DER",
                    "-in", str(work / "v15.pdf"), "-out", str(work / "v15.pdf.p7m"),
                    *map(str, certs)], check=True, capture_output=True)
    subprocess.run([*tk, "seal", str(work / "tokenkeys.pdf"), "-o",
                    str(work / "tokenkeys.pdf.p7m"), "--consultation", "2026-AO-001"],
                   env=env, check=True, capture_output=True)
    return bids


def test_the_demo_platform_drives_the_assistant_in_chromium(
        scene: Scene, tmp_path: Path) -> None:
    s = scene
    driver = s.driver
    driver.get(f"{s.platform_url}/admin")
    s.wait(lambda _d: s.by_id("assistant-state").get_attribute("data-state") == "unpaired")
    assert "running on this computer" in s.by_id("assistant-state").text
    s.shot("detected")

    # Pairing: the code is shown in the assistant's own window, in a second tab.
    s.by_id("pair-start").click()
    tabs = {"platform": driver.current_window_handle}
    driver.switch_to.new_window("tab")
    tabs["assistant"] = driver.current_window_handle
    driver.get(s.assistant.window_url)
    s.wait(lambda _d: s.css(".code"))
    code = s.css(".code")[0].text
    assert len(code) == 6 and code.isdigit()
    s.shot("assistant-pairing-code")
    driver.switch_to.window(tabs["platform"])
    s.by_id("pair-code").send_keys(code)
    s.by_id("pair-confirm").click()
    s.wait(lambda _d: s.by_id("assistant-state").get_attribute("data-state") == "ready")
    s.shot("paired")

    # Create a key pair, and a backup key pair, each after approval in the assistant.
    text = _generate(s, tabs, "BICLE-2026", backup=False)
    assert s.platform_url in text and "BICLE-2026" in text
    _generate(s, tabs, "SECOURS-2026", backup=True)
    s.wait(lambda _d: len(s.css("#keys tbody tr[data-designation]")) == 2)
    rows = {r.get_attribute("data-designation"): r for r in s.css("#keys tbody tr")}
    assert rows["BICLE-2026"].get_attribute("data-certificate").startswith(
        "-----BEGIN CERTIFICATE-----")
    assert "yes" in rows["SECOURS-2026"].text
    s.shot("key-pairs-listed")
    listed = subprocess.run(
        ["pkcs11-tool", "--module", s.softhsm.module, "--token-label", s.label, "-O",
         "--login", "--pin", PIN], capture_output=True, text=True, check=True,
        env={**os.environ, "SOFTHSM2_CONF": str(s.softhsm.conf)}).stdout
    assert "BICLE-2026" in listed and "SECOURS-2026" in listed
    assert "Private Key Object" in listed and "Certificate Object" in listed

    # The platform binds a consultation; bidders seal their bids to it.
    env = {**os.environ, "TOKENKEYS_REGISTRY": s.config.registry,
           "SOFTHSM2_CONF": str(s.softhsm.conf), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "tokenkeys", "consultation", "create", "2026-AO-001",
                    "--key", "BICLE-2026"], env=env, check=True, capture_output=True)
    bids = _envelopes(s, tmp_path, env)

    # The opening screen: one approval and one PIN for the three bids.
    driver.get(f"{s.platform_url}/opening")
    s.wait(lambda _d: s.by_id("assistant-state").get_attribute("data-state") == "ready")
    s.by_id("consultation").send_keys("2026-AO-001")
    s.by_id("envelopes").send_keys("\n".join(str(tmp_path / f"{n}.p7m") for n in bids))
    s.by_id("open").click()
    text = s.approve_in_assistant(tabs, "approve-opening")
    assert "open 3 bids of consultation 2026-AO-001 with BICLE-2026" in text
    s.wait(lambda _d: len(s.css("#results tr[data-status]")) == 3, timeout=30)
    for row in s.css("#results tr[data-status]"):
        name = row.get_attribute("data-file").removesuffix(".p7m")
        assert row.get_attribute("data-status") == "opened", row.text
        content = row.find_element("css selector", "td.content").text
        assert content == bids[name].decode().strip()
    s.shot("bids-opened")
    docs = os.environ.get("TOKENKEYS_DOCS_SCREENSHOTS")
    if docs:  # how docs/images/ got its two screenshots
        for shot in s.shots.glob("*.png"):
            if "assistant-pairing-code" in shot.name or "bids-opened" in shot.name:
                shutil.copy(shot, Path(docs) / shot.name.split("-", 1)[1])


def test_pages_follow_the_browsers_language(scene: Scene) -> None:
    """A browser that asks for French (Chromium --lang=fr: Accept-Language: fr) gets the
    demo platform's pages and the assistant's window in French, the strings of their
    scripts included; the English browser of the tests above gets them in English."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1100,900", "--lang=fr"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"intl.accept_languages": "fr-FR,fr"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"{scene.platform_url}/admin")
        state = driver.find_element(By.ID, "assistant-state")
        # The script's own text: this new browser has not paired with the assistant.
        WebDriverWait(driver, 20).until(lambda _d: state.get_attribute("data-state"))
        assert state.text == ("L'assistant est lancé sur cet ordinateur ; appairez cette page "
                              "avec lui pour l'utiliser.")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Plateforme de marchés publics de démonstration" in body
        assert "Bi-clés personnels" in body and "Créer un bi-clé" in body
        assert "Create a key pair" not in body
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
        driver.save_screenshot(str(scene.shots / "fr-admin.png"))
        driver.get(scene.assistant.window_url)
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.ID, "state").text == "L'assistant est lancé et prêt.")
        window = driver.find_element(By.TAG_NAME, "body").text
        assert "Codes d'appairage" in window and "En attente de votre approbation" in window
        assert "Pairing codes" not in window
        driver.save_screenshot(str(scene.shots / "fr-assistant.png"))
    finally:
        driver.quit()
    scene.driver.get(f"{scene.platform_url}/admin")
    english = scene.driver.find_element(By.TAG_NAME, "body").text
    assert "Demo procurement platform" in english and "Create a key pair" in english
    assert "Créer un bi-clé" not in english
