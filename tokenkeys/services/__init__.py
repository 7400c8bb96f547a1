"""Workflows above the registry and the driver contract (provisioning, CA, opening, policy)."""
