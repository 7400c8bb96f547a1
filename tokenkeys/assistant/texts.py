"""Every sentence the assistant shows or answers with, whole and with named placeholders,
so that a translation (gettext, a later issue) can reorder them freely."""

from __future__ import annotations

APPROVE_OPEN = ("{origin} wants to open {count} bids of consultation {reference} with "
                "{key}, within {minutes} minutes.")
APPROVE_GENERATE = ("{origin} wants to create the key pair {name} ({algorithm}, valid {days} "
                    "days) on {token}.")
APPROVE_GENERATE_BACKUP = ("{origin} wants to create the backup key pair {name} ({algorithm}, "
                           "valid {days} days) on {token}.")
APPROVE_CERTIFY = "{origin} wants to store a certificate for the key pair {name} on {token}."
REFUSED = "The operation was refused in the assistant."
TIMED_OUT = "Nobody approved the operation in the assistant within {seconds} seconds."
SHUTTING_DOWN = "The assistant is stopping."
NO_PIN = "Type the PIN to approve this operation."
UNKNOWN_REQUEST = "This request is no longer waiting for an answer."
PAIRING_CODE = "Pairing code for {origin}: {code} (type it in the platform's page)."
CONSOLE_ASK = "Approve? [y/N] "
CONSOLE_PIN = "PIN for {token}: "
STARTED = ("The assistant is listening on {url}. Its window (pairing codes, approvals, PIN): "
           "{window}")
ORIGINS = "Platform origins allowed: {origins}"
NO_ORIGINS = ("No platform origin is allowed yet: add --origin https://… or `origins` in the "
              "[assistant] table of the configuration.")
STOPPED = "The assistant stopped; every opening session was closed and logged out."
