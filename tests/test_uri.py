"""RFC 7512 URIs: the RFC's own examples (section 3.3) parse and round-trip."""

from __future__ import annotations

import pytest

from tokenkeys.errors import SecretInUri, UsageError
from tokenkeys.uri import Pkcs11Uri, SoftUri, parse, parse_pkcs11, parse_soft

RFC_EXAMPLES = [
    "pkcs11:",
    "pkcs11:object=my-pubkey;type=public",
    "pkcs11:object=my-key;type=private",
    "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
    "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=",
    "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
    "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
    "pkcs11:slot-description=Sun%20Metaslot",
    "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;"
    "library-version=1.23",
    "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;"
    "id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
    "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
    "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;"
    "type=cert",
    "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a?vendor-bbb=value-b",
]


@pytest.mark.parametrize("text", RFC_EXAMPLES)
def test_rfc_examples_round_trip(text: str) -> None:
    uri = parse_pkcs11(text)
    assert parse_pkcs11(str(uri)) == uri


def test_values_are_decoded() -> None:
    uri = parse_pkcs11(RFC_EXAMPLES[3])
    assert uri.token == "The Software PKCS#11 Softtoken"
    assert uri.attrs["manufacturer"] == "Snake Oil, Inc."
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert uri.type == "cert"
    assert parse_pkcs11(RFC_EXAMPLES[10]).token == "Name with a small A with acute: á"
    assert parse_pkcs11(RFC_EXAMPLES[9]).token == "A name with a substring %;"
    assert parse_pkcs11(RFC_EXAMPLES[5]).module_path == "/mnt/libmypkcs11.so.1"
    assert parse_pkcs11("pkcs11:slot-id=3").slot_id == 3


def test_format_encodes_reserved_characters() -> None:
    uri = Pkcs11Uri(attrs={"token": "a;b c%"}, id=b"\x00\xff", query={"module-path": "/x y.so"})
    text = str(uri)
    assert text == "pkcs11:token=a%3Bb%20c%25;id=%00%FF?module-path=/x%20y.so"
    assert parse_pkcs11(text) == uri


@pytest.mark.parametrize(
    "text",
    [
        "pkcs11:token=x?pin-value=1234",
        "pkcs11:token=x;pin-value=1234",
        "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
        "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?"
        "pin-value=the-pin",
    ],
)
def test_secrets_in_uri_are_refused(text: str) -> None:
    with pytest.raises(SecretInUri) as info:
        parse_pkcs11(text)
    assert "1234" not in str(info.value) and "the-pin" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "pkcs11:token=%zz",
        "pkcs11:token",
        "pkcs11:token=a;token=b",
        "pkcs11:type=secret",
        "pkcs11:slot-id=abc",
        "pkcs11:bogus=1",
        "pkcs11:token=%FF%FE",
        "http://example",
    ],
)
def test_malformed_uris_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse(text)


def test_soft_uri() -> None:
    assert parse_soft("soft:/tmp/ks") == SoftUri("/tmp/ks")
    assert parse_soft("soft:/tmp/ks#buyer key") == SoftUri("/tmp/ks", "buyer key")
    assert str(SoftUri("/tmp/ks", "k")) == "soft:/tmp/ks#k"
    with pytest.raises(UsageError):
        parse_soft("soft:")


def test_token_only_and_with_object() -> None:
    uri = parse_pkcs11("pkcs11:token=t;object=k;type=private;id=%01?module-path=/m.so")
    assert str(uri.token_only()) == "pkcs11:token=t?module-path=/m.so"
    assert uri.token_only().with_object("z", b"\x02").object == "z"
