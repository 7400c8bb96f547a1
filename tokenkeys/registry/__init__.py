"""The registry: services, keys, consultations and their bindings, and the audit log.

SQLite by default, PostgreSQL for a registry shared by an entity's workstations.
"""

from tokenkeys.registry.audit import EVENTS, AuditRow, Verdict
from tokenkeys.registry.location import Location, parse_location, redact
from tokenkeys.registry.records import (
    Consultation,
    KeyFacts,
    KeyLocation,
    KeyRow,
    ServiceRow,
    fingerprint,
)
from tokenkeys.registry.repo import DEFAULT_SERVICE, Registry, Removal

__all__ = [
    "DEFAULT_SERVICE",
    "EVENTS",
    "AuditRow",
    "Consultation",
    "KeyFacts",
    "KeyLocation",
    "KeyRow",
    "Location",
    "Registry",
    "Removal",
    "ServiceRow",
    "Verdict",
    "fingerprint",
    "parse_location",
    "redact",
]
