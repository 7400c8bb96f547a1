"""Workflows above the driver contract (DESIGN.md layering: cli -> services -> drivers)."""
