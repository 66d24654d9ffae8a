"""A recording HTTP server on 127.0.0.1: answers with canned JSON and keeps every request.

KFP and Vertex AI have no local server; their deploy tests check the exact requests the SDKs send
here (method, path, query, body) and say so in their names.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from unipipe.harness.receivers import POLL_SECONDS


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


Route = Callable[[Recorded], "tuple[int, Any]"]


class RecordingServer:
    def __init__(self, route: Route) -> None:
        self.requests: list[Recorded] = []
        self.route = route
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                rec = Recorded(self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                               {k.lower(): v for k, v in self.headers.items()}, body)
                server.requests.append(rec)
                status, payload = server.route(rec)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # the harness receivers' poll interval: ``close`` then returns at once instead of after
        # up to 0.5 s (``serve_forever``'s default)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(POLL_SECONDS,),
                                       daemon=True)
        self.thread.start()

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def service_account_file(path, token_uri: str, email: str) -> None:
    """A service-account key file with a fresh RSA key: Application Default Credentials for a test
    (GOOGLE_APPLICATION_CREDENTIALS), whose token exchanges go to ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({"type": "service_account", "project_id": email.split("@")[1].split(".")[0],
                                "private_key_id": "k1", "private_key": pem, "client_email": email,
                                "client_id": "1", "token_uri": token_uri}))
