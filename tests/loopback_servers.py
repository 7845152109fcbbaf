"""Real servers the payment and webhook tests talk to, on loopback only.

``run_localstripe(api_key)`` starts a ``localstripe`` server in a subprocess and yields
its base URL (``localstripe_charges`` lists a customer's charges there);
``run_webhook_receiver()`` runs an HTTP receiver in a thread that answers
500 to the first ``failures`` requests of each event id, then 200, and records every
request. Both stop when their ``with`` block ends. Shared by test_payments,
test_webhooks and test_invoicing_end_to_end (one definition, no copies).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

__all__ = [
    "Received",
    "Receiver",
    "StripeCharge",
    "free_port",
    "localstripe_charges",
    "run_localstripe",
    "run_webhook_receiver",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# localstripe's own entry point listens on every interface and pickles its store to a
# fixed /tmp file; this runs the same app on loopback only, in memory.
_LOCALSTRIPE = """
import sys
from aiohttp import web
from localstripe import resources, server
resources.Store.dump_to_disk = lambda self: None
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


@contextmanager
def run_localstripe(api_key: str) -> Iterator[str]:
    """A localstripe server on a free loopback port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _LOCALSTRIPE, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/v1/customers", auth=(api_key, ""), timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"localstripe did not start: {process.stderr.read()!r}")
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass(frozen=True)
class StripeCharge:
    id: str
    status: str
    amount: int
    currency: str
    payment_intent: str


def localstripe_charges(base: str, stripe_customer_id: str, api_key: str) -> list[StripeCharge]:
    """The customer's charges as localstripe lists them over HTTP (oldest first)."""
    response = httpx.get(
        f"{base}/v1/charges", params={"customer": stripe_customer_id, "limit": 100}, auth=(api_key, "")
    )
    response.raise_for_status()
    rows = sorted(response.json()["data"], key=lambda c: (c["created"], c["id"]))
    return [StripeCharge(c["id"], c["status"], c["amount"], c["currency"], c["payment_intent"]) for c in rows]


@dataclass
class Received:
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Receiver:
    """Answers 500 to the first ``failures`` requests of each event id, then 200."""

    failures: int = 2
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.requests.append(Received(headers, body))
            seen = sum(1 for r in self.requests if r.headers["billhouse-event-id"] == headers["billhouse-event-id"])
        return 500 if seen <= self.failures else 200


@contextmanager
def run_webhook_receiver(failures: int = 2) -> Iterator[tuple[Receiver, str]]:
    """A receiver thread on a free loopback port; yields (its state, its URL)."""
    state = Receiver(failures=failures)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = state.answer({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hooks"
    finally:
        server.shutdown()
        server.server_close()
