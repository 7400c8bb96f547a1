"""tokenkeys: key pairs for sealed bids, kept inside PKCS#11 devices."""

__version__ = "0.1.0"
