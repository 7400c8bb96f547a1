"""Every sentence the assistant shows or answers with, whole and with named placeholders,
translated where they are shown (tokenkeys.i18n), so that a translation can reorder them."""

from __future__ import annotations

from tokenkeys.i18n import N_

APPROVE_OPEN = N_("{origin} wants to open {count} bids of consultation {reference} with "
                "{key}, within {minutes} minutes.")
APPROVE_GENERATE = N_("{origin} wants to create the key pair {name} ({algorithm}, valid {days} "
                    "days) on {token}.")
APPROVE_GENERATE_BACKUP = N_("{origin} wants to create the backup key pair {name} ({algorithm}, "
                           "valid {days} days) on {token}.")
APPROVE_CERTIFY = N_("{origin} wants to store a certificate for the key pair {name} on {token}.")
REFUSED = N_("The operation was refused in the assistant.")
TIMED_OUT = N_("Nobody approved the operation in the assistant within {seconds} seconds.")
SHUTTING_DOWN = N_("The assistant is stopping.")
NO_PIN = N_("Type the PIN to approve this operation.")
UNKNOWN_REQUEST = N_("This request is no longer waiting for an answer.")
PAIRING_CODE = N_("Pairing code for {origin}: {code} (type it in the platform's page).")
CONSOLE_ASK = N_("Approve? [y/N] ")
CONSOLE_PIN = N_("PIN for {token}: ")
STARTED = N_("The assistant is listening on {url}. Its window (pairing codes, approvals, PIN): "
           "{window}")
ORIGINS = N_("Platform origins allowed: {origins}")
NO_ORIGINS = N_("No platform origin is allowed yet: add --origin https://… or `origins` in the "
              "[assistant] table of the configuration.")
STOPPED = N_("The assistant stopped; every opening session was closed and logged out.")
