"""Workflows and rules above the registry and the driver contract (layering: cli and
assistant -> services -> registry, envelope -> drivers): provisioning, CA, sealing,
opening, policy, sharing, doctor.

The overwrite policy of every command that writes a file, for the front ends to apply
before a PIN is asked (the services apply it again where they write).
"""

from tokenkeys.files import prepare_output

__all__ = ["prepare_output"]
