"""Workflows above the registry and the driver contract (DESIGN.md layering:
cli -> services -> registry/envelope -> drivers): provisioning, CA, opening, policy, sharing."""
