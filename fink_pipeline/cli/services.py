"""What the commands managing a local service (`broker`, `spark connect`) share: the address
checks of `start`, and how `stop` and `status` report."""

from __future__ import annotations

import sys

from fink_pipeline.cli.main import UserError


def check_listen_address(port: int | None, host: str) -> None:
    """Refuse a port out of range or a wildcard host (the host is also the address clients are
    given: they cannot connect to a wildcard)."""
    if port is not None and not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    if host in {"0.0.0.0", "::", ""}:
        raise UserError("--host must be an address clients can reach, not a wildcard")


def report_stop(stopped: bool) -> int:
    """`stop`'s output: "stopped", or "not running" on stderr; exit code 0 either way."""
    if stopped:
        print("stopped")
    else:
        print("not running", file=sys.stderr)
    return 0


def report_status(address: str | None) -> int:
    """`status`'s output: the address to connect to (exit 0), or "not running" on stderr (exit 1)."""
    if address is None:
        print("not running", file=sys.stderr)
        return 1
    print(address)
    return 0
