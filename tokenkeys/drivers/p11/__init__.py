"""One PKCS#11 token over a narrow binding port; see docs/drivers.md."""
