"""Policy workflows above the registry and the driver contract."""
