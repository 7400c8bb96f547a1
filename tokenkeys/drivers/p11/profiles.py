"""Device quirks as data: one row per device family, found by CK_TOKEN_INFO.

A new device that needs no quirk needs no row (GENERIC). See docs/drivers.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenkeys.drivers.base import HSM, SMARTCARD, SOFTWARE, TPM
from tokenkeys.drivers.negotiate import SHA1_ONLY, OaepParams
from tokenkeys.drivers.p11.ckr import CKR, MAYBE_REMOVED, PADDING_OUTCOME
from tokenkeys.i18n import N_


@dataclass(frozen=True)
class Profile:
    name: str
    device_class: str = HSM  # HSM, TPM, smartcard or software (doctor)
    # The CKA_ID the device gives a generated key (OpenPGP: 02); None: tokenkeys
    # chooses, CKA_ID = SHA-1 of the public key.
    keygen_slot: bytes | None = None
    keygen_needs_so: bool = False  # generation and object writes need the SO (admin) PIN
    decryption_key_signs: bool = True  # False: no self-signed certificate possible
    decrypt_only_usage: bool = False  # generate with decrypt/derive usage only
    # On-device OAEP parameters known to work; None: try, fall back on refusal.
    oaep: frozenset[OaepParams] | None = None
    tries_hint: str | None = None  # PinIncorrect hint when the token sets no PIN flag
    can_delete: bool = True  # C_DestroyObject really deletes
    # OpenSC 0.23 reads a key generated in this process wrong until C_Finalize.
    reread_after_keygen: bool = False
    # A wrong PIN answered with CKR_USER_NOT_LOGGED_IN (emulated OpenPGP card: 6982).
    wrong_pin_not_logged_in: bool = False
    can_store_chain: bool = True  # extra CKO_CERTIFICATE objects are possible
    # CKRs beyond ckr.PADDING_OUTCOME this device answers a bad padding with. Only
    # here: on other devices such a code is a device failure, not a damaged bid. One
    # that is also in removal_codes counts only while the reader shows the device.
    padding_codes: frozenset[int] = frozenset()
    # Answers that may mean "pulled out of its reader": on these (a decryption's
    # padding answer included) the token asks the reader whether the device is still
    # there, and says "removed" when it is not. Empty for a device that cannot leave.
    removal_codes: frozenset[int] = MAYBE_REMOVED
    # One certificate per key that a second write does not replace (OpenPGP: DO 7F21;
    # OpenSC answers CKR_GENERAL_ERROR): the old one is removed first.
    remove_certificate_first: bool = False
    # The store changes an attribute atomically (tpm2-pkcs11: SQLite), so a key's
    # public objects are renamed in place after the registry commit. Else they are
    # copied then the originals destroyed (SoftHSM2 rewrites object files in place).
    relabel_in_place: bool = False
    # Hash-and-sign mechanisms the device lists but that do not work: signing
    # negotiation (negotiate_sign.py) hashes in software instead. Empty unless measured.
    sign_avoid: frozenset[str] = frozenset()

    def is_padding_outcome(self, code: int) -> bool:
        """Does this answer to a decryption the device performed speak of the
        ciphertext only (so the v1.5 countermeasure may hide it)?"""
        return code in PADDING_OUTCOME or code in self.padding_codes


GENERIC = Profile("generic")
OPENPGP = Profile(
    "OpenPGP card (OpenSC)", device_class=SMARTCARD, keygen_slot=b"\x02", keygen_needs_so=True,
    decryption_key_signs=False, decrypt_only_usage=True,
    tries_hint=N_("more than one try left; this card reports only the final try"),
    # C_DestroyObject "succeeds" but a new process still sees the key.
    can_delete=False, reread_after_keygen=True, wrong_pin_not_logged_in=True,
    can_store_chain=False,  # one cardholder certificate DO (7F21)
    remove_certificate_first=True,
    # A block the card cannot decrypt (the emulated card: one not below the modulus)
    # is answered 6F00, which OpenSC 0.23 reports as CKR_GENERAL_ERROR. A pulled card
    # can answer that too: it is a padding answer only while the reader shows the card.
    padding_codes=frozenset({CKR["CKR_GENERAL_ERROR"]}),
)
SOFTHSM2 = Profile(
    "SoftHSM2", device_class=SOFTWARE, oaep=SHA1_ONLY,  # SHA-2 OAEP: CKR_ARGUMENTS_BAD
    # 2.6.1 answers every bad RSA block (v1.5 or OAEP, even a short one) this way.
    padding_codes=frozenset({CKR["CKR_GENERAL_ERROR"]}),
    removal_codes=frozenset(),  # files on disk: never pulled out
)
# tpm2-pkcs11 1.9: OAEP SHA-1..SHA-512 on the device, hash-and-sign RSA and ECDSA; no
# ECDH, no extractable keys, no key wrapping. Its token reports the TPM chip's vendor:
# swtpm says ("IBM", "SW   TPM"); a real chip is found by its module (MODULE_PROFILES).
TPM2 = Profile(
    "TPM 2.0 (tpm2-pkcs11)", device_class=TPM,
    # It lists RSA_PKCS_OAEP for any parameters, but the TPM masks with the OAEP
    # hash itself: another MGF1 hash answers CKR_GENERAL_ERROR and leaves swtpm in
    # failure mode. Those go to raw RSA and software decoding.
    oaep=frozenset((h, h, False) for h in ("sha1", "sha256", "sha384", "sha512")),
    # Its objects live in an SQLite store. A public key or certificate made with
    # C_CreateObject comes back as a second key with the same CKA_ID: rename in place.
    relabel_in_place=True,
    removal_codes=frozenset(),  # a chip on the board (or swtpm): never pulled out
)
# opencryptoki 3.8 software token: no quirk either. It lacks CKM_SHA256_RSA_PKCS (it
# says so, so negotiation signs a DigestInfo through CKM_RSA_PKCS) and EC.
OPENCRYPTOKI_SW = Profile("opencryptoki software token", device_class=SOFTWARE,
                          removal_codes=frozenset())

# (manufacturer, model or "" for any model) -> profile.
PROFILES: dict[tuple[str, str], Profile] = {
    ("OpenPGP project", ""): OPENPGP,
    ("SoftHSM project", "SoftHSM v2"): SOFTHSM2,
    ("IBM", "SW   TPM"): TPM2,
    ("IBM Corp.", "IBM SoftTok"): OPENCRYPTOKI_SW,
}
# Module file name -> profile, for tokens no (manufacturer, model) row names (a TPM
# reports its chip maker, any of several).
MODULE_PROFILES: dict[str, Profile] = {"libtpm2_pkcs11.so": TPM2}


def profile_for(manufacturer: str, model: str, module: str = "") -> Profile:
    found = PROFILES.get((manufacturer, model)) or PROFILES.get((manufacturer, ""))
    if found is not None:
        return found
    name = module.rsplit("/", 1)[-1]
    return MODULE_PROFILES.get(name.split(".so")[0] + ".so" if ".so" in name else name, GENERIC)
