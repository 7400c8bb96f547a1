"""The CLI fixtures (tests/cli/conftest.py) for the device smoke runs."""

from tests.cli.conftest import cli_env, forkserver, tk  # noqa: F401
