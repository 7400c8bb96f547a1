"""RFC 7512 PKCS#11 URIs, and the `soft:DIR` scheme of the software keystore.

Secrets never travel in URIs: `pin-value` and `pin-source` are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote_to_bytes

from tokenkeys.errors import SecretInUri, UsageError
from tokenkeys.i18n import _

PATH_ATTRS = (
    "library-description",
    "library-manufacturer",
    "library-version",
    "manufacturer",
    "model",
    "object",
    "serial",
    "slot-description",
    "slot-id",
    "slot-manufacturer",
    "token",
    "type",
    "id",
)
QUERY_ATTRS = ("module-name", "module-path")
SECRET_ATTRS = ("pin-value", "pin-source")
OBJECT_TYPES = ("public", "private", "cert", "secret-key", "data")
# RFC 7512 section 2.3: characters allowed unencoded in attribute values.
_PATH_SAFE = "-._~:[]@!$'()*+,="
_QUERY_SAFE = "-._~:[]@!$'()*+,=/?|"


@dataclass(frozen=True)
class Pkcs11Uri:
    """Parsed `pkcs11:` URI. `id` is raw bytes; every other value is text."""

    attrs: dict[str, str] = field(default_factory=dict)
    id: bytes | None = None
    query: dict[str, str] = field(default_factory=dict)

    @property
    def token(self) -> str | None:
        return self.attrs.get("token")

    @property
    def serial(self) -> str | None:
        return self.attrs.get("serial")

    @property
    def object(self) -> str | None:
        return self.attrs.get("object")

    @property
    def slot_id(self) -> int | None:
        value = self.attrs.get("slot-id")
        return int(value) if value is not None else None

    @property
    def module_path(self) -> str | None:
        return self.query.get("module-path") or self.attrs.get("module-path")

    @property
    def module_name(self) -> str | None:
        return self.query.get("module-name")

    @property
    def type(self) -> str | None:
        return self.attrs.get("type")

    def with_object(self, label: str | None = None, key_id: bytes | None = None) -> Pkcs11Uri:
        attrs = dict(self.attrs)
        attrs.pop("type", None)
        if label is not None:
            attrs["object"] = label
        return replace(self, attrs=attrs, id=key_id if key_id is not None else self.id)

    def token_only(self) -> Pkcs11Uri:
        """The same URI without object, id and type: it names the token."""
        attrs = {k: v for k, v in self.attrs.items() if k not in ("object", "type")}
        return Pkcs11Uri(attrs=attrs, id=None, query=dict(self.query))

    def __str__(self) -> str:
        parts = [f"{k}={quote(v, safe=_PATH_SAFE)}" for k, v in self.attrs.items()]
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02X}" for b in self.id))
        text = "pkcs11:" + ";".join(parts)
        if self.query:
            query = (f"{k}={quote(v, safe=_QUERY_SAFE)}" for k, v in self.query.items())
            text += "?" + "&".join(query)
        return text


def _decode(value: str, uri: str) -> bytes:
    if "%" in value:
        for i, ch in enumerate(value):
            if ch == "%" and not _is_hex(value[i + 1 : i + 3]):
                raise UsageError(_("bad percent-encoding in PKCS#11 URI: {uri!r}").format(uri=uri))
    return unquote_to_bytes(value)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(_("PKCS#11 URI attribute {name} is not UTF-8").format(name=name)) from None


def parse_pkcs11(uri: str) -> Pkcs11Uri:
    if not uri.lower().startswith("pkcs11:"):
        raise UsageError(_("not a PKCS#11 URI: {uri!r}").format(uri=uri))
    body = uri[len("pkcs11:") :]
    path, _sep, query = body.partition("?")
    attrs: dict[str, str] = {}
    key_id: bytes | None = None
    for item in filter(None, path.split(";")):
        name, sep, value = item.partition("=")
        name = name.lower()
        if name in SECRET_ATTRS:
            raise SecretInUri()
        if not sep:
            raise UsageError(_("PKCS#11 URI attribute without a value: {name!r}")
                             .format(name=name))
        if name in attrs or (name == "id" and key_id is not None):
            raise UsageError(_("PKCS#11 URI repeats the attribute {name!r}").format(name=name))
        raw = _decode(value, uri)
        if name == "id":
            key_id = raw
        elif name in PATH_ATTRS or name == "module-path" or "-" in name:
            # RFC 7512 2.3: vendor attributes look like "vendor-name"; keep them.
            attrs[name] = _text(raw, name)
        else:
            raise UsageError(_("unknown PKCS#11 URI attribute {name!r}").format(name=name))
    queries: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        name, _sep, value = item.partition("=")
        name = name.lower()
        if name in SECRET_ATTRS:
            raise SecretInUri()
        if name in QUERY_ATTRS or "-" in name:
            queries[name] = _text(_decode(value, uri), name)
        else:
            raise UsageError(_("unknown PKCS#11 URI query attribute {name!r}").format(name=name))
    if "type" in attrs and attrs["type"] not in OBJECT_TYPES:
        raise UsageError(_("unknown PKCS#11 object type {attrs!r}").format(attrs=attrs['type']))
    if "slot-id" in attrs and not attrs["slot-id"].isdigit():
        raise UsageError(_("slot-id must be a decimal number, not {attrs!r}")
                         .format(attrs=attrs['slot-id']))
    return Pkcs11Uri(attrs=attrs, id=key_id, query=queries)


@dataclass(frozen=True)
class SoftUri:
    """`soft:DIR[#NAME]` names the software keystore in DIR, and optionally a key."""

    directory: str
    name: str | None = None

    def __str__(self) -> str:
        return f"soft:{self.directory}" + (f"#{self.name}" if self.name else "")


def parse_soft(uri: str) -> SoftUri:
    if not uri.startswith("soft:") or len(uri) == len("soft:"):
        raise UsageError(_("not a software keystore URI (soft:DIRECTORY): {uri!r}")
                         .format(uri=uri))
    directory, _sep, name = uri[len("soft:") :].partition("#")
    if not directory:
        raise UsageError(_("software keystore URI without a directory: {uri!r}").format(uri=uri))
    return SoftUri(directory=directory, name=name or None)


def parse(uri: str) -> Pkcs11Uri | SoftUri:
    if uri.lower().startswith("pkcs11:"):
        return parse_pkcs11(uri)
    if uri.startswith("soft:"):
        return parse_soft(uri)
    raise UsageError(_("unknown key URI scheme in {uri!r} (expected pkcs11: or soft:)")
                     .format(uri=uri))


def same_token(a: str, b: str) -> bool:
    """Whether two token URIs name the same token: its label and serial (a PKCS#11
    token, wherever its module or reader is on this workstation or another), or the
    same keystore directory."""
    try:
        pa, pb = parse(a), parse(b)
    except UsageError:
        return a == b
    if isinstance(pa, SoftUri) or isinstance(pb, SoftUri):
        return isinstance(pa, SoftUri) and isinstance(pb, SoftUri) and \
            os.path.realpath(pa.directory) == os.path.realpath(pb.directory)
    return (pa.token, pa.serial) == (pb.token, pb.serial)
