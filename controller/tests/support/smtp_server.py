#!/usr/bin/env python3
"""A real SMTP server for controller/tests/alert_delivery.rs.

Listens on 127.0.0.1 (plain SMTP, no TLS), requires AUTH (PLAIN or LOGIN) with
the one user and password given, and stores every message it accepts in a
Maildir. Prints `READY <port>` on stdout once it accepts connections, then runs
until it is killed (SIGTERM/SIGINT) or its stdin is closed (the test that
started it is gone).

    python3 smtp_server.py --maildir DIR --user USER --password PASSWORD [--port PORT]

Needs aiosmtpd (`pip install aiosmtpd`).
"""

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import warnings

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:
    print("aiosmtpd is not installed: pip install aiosmtpd", file=sys.stderr)
    sys.exit(3)

HOST = "127.0.0.1"

# AUTH without TLS is the point here (loopback only): no warning about it.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
logging.getLogger("mail.log").setLevel(logging.ERROR)


def free_port():
    """A port that was free a moment ago (aiosmtpd cannot listen on port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def authenticator_for(user, password):
    """Accepts exactly `user` and `password`, by AUTH PLAIN or LOGIN."""
    expected = (user.encode(), password.encode())

    def authenticate(server, session, envelope, mechanism, auth_data):
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        accepted = (auth_data.login, auth_data.password) == expected
        return AuthResult(success=accepted, handled=False, auth_data=auth_data)

    return authenticate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--maildir", required=True, help="Maildir receiving the messages")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()

    # An existing empty directory is not made a Maildir by Python's mailbox module.
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(args.maildir, sub), exist_ok=True)

    controller = None
    # A free port can be taken between the probe and the listen: try a few.
    for _ in range(5):
        port = args.port or free_port()
        candidate = Controller(
            Mailbox(args.maildir),
            hostname=HOST,
            port=port,
            authenticator=authenticator_for(args.user, args.password),
            auth_required=True,
            auth_require_tls=False,
        )
        try:
            candidate.start()
        except (OSError, RuntimeError) as error:
            if args.port:
                print(f"cannot listen on {HOST}:{port}: {error}", file=sys.stderr)
                sys.exit(2)
            continue
        controller = candidate
        break
    if controller is None:
        print(f"cannot find a free port on {HOST}", file=sys.stderr)
        sys.exit(2)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def watch_stdin():
        # EOF on stdin: whoever started us is gone.
        try:
            while sys.stdin.read(4096):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"READY {port}", flush=True)
    while not stop.wait(0.5):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
