"""Starts real Milvus 2.3.5 (PyPI ``milvus==2.3.5``) for scripts/bench.sh and keeps it up
until this process gets SIGTERM or its stdin closes.

Prints ``READY <host:port>`` on stdout once the server answers DDL. Reuses the launcher of
the compatibility suite (tests/compat/servers.py), so both start Milvus the same way. Run it
only inside a private network namespace: Milvus listens on all interfaces.
"""

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "compat"))

from servers import Milvus235Server  # noqa: E402


def main() -> int:
    server = Milvus235Server()
    handle = server.start()
    stop = {"now": False}

    def on_term(signum, frame):
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"READY {handle.address}", flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
