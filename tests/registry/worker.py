"""A registry client process for the concurrency and kill tests.

    python -m tests.registry.worker LOCATION PREFIX COUNT

Creates COUNT consultations PREFIX-0..N bound to key K, each through a freshly opened
registry (as separate CLI runs would), printing one line per consultation.
"""

from __future__ import annotations

import sys

from tokenkeys.registry import Registry
from tokenkeys.services import consultations


def hang_inside_a_write(location: str) -> None:
    """Write a service and an audit row, then wait inside the open transaction."""
    import time

    import sqlalchemy as sa

    from tokenkeys.registry import audit
    from tokenkeys.registry.schema import services

    def run(conn: sa.Connection) -> None:
        conn.execute(services.insert().values(name="half-written", created_at="x",
                                              created_by="x"))
        audit.append(conn, "service-create", subject="half-written")
        print("inside", flush=True)
        time.sleep(120)

    with Registry.open(location) as reg:
        reg.db.transaction(run)


def main(location: str, prefix: str, count: int) -> None:
    if prefix == "HANG":
        hang_inside_a_write(location)
        return
    from tokenkeys.errors import PolicyRefused

    for n in range(count):
        with Registry.open(location) as reg:
            try:
                consultations.create(reg, "default", f"{prefix}-{n}", "K", closes=None,
                                     title=None, no_backup=False)
            except PolicyRefused as exc:
                assert "a binding is never changed" in str(exc)
                print(n, "refused", flush=True)
                continue
        print(n, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
