"""The click CLI: a thin private layer over the library. No crypto here."""
