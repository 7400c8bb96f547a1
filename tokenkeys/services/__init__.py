"""Workflows above the driver contract (provisioning, CA, opening, policy)."""
