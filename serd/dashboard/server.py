"""The dashboard's web server and its ZeroMQ subscriber, standard library only.

Threads:
- `StreamReader`: the only user of the ZeroMQ SUB socket (sockets are not
  thread-safe). It decodes with `serd.messages.decode` and updates the
  `DashboardState`, and marks devices stale.
- `http.server.ThreadingHTTPServer`: a thread per request. `/events` streams
  Server-Sent Events from the client's bounded queue; `/api/analyze` classifies
  an uploaded recording from memory with `serd.analysis.analyze_file`.

Why the standard library: on a Pi every extra wheel is a download, a build
risk on ARM and resident memory; a page for a handful of viewers needs neither
an event loop nor a framework.
"""

from __future__ import annotations

import hmac
import http.server
import io
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from serd import __version__
from serd.dashboard.history import PREFIX as HISTORY_PREFIX
from serd.dashboard.history import History
from serd.dashboard.settings import (  # noqa: F401  (re-exported for the CLI and tests)
    MAX_UPLOAD_BYTES,
    MB,
    DashboardError,
    DashboardSettings,
    is_loopback_host,
    parse_listen,
)
from serd.dashboard.guard import (
    COOKIE_MAX_AGE_S,
    HEADER_DEADLINE_S,
    ConnectionGuard,
    DeadlineReader,
    GuessThrottle,
    client_key,
    cookie_ok,
    session_cookie,
)
from serd.dashboard.state import DashboardState
from serd.dashboard.stream import StreamReader
from serd.dashboard.upload import (  # noqa: F401
    FILENAME_HEADER,
    MAX_UPLOAD_DURATION_S,
    UPLOAD_EXTENSIONS,
    Analyzer,
    UploadError,
    check_extension,
    clean_filename,
)

_LOGGER = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/history.html": ("history.html", "text/html; charset=utf-8"),
    "/history.js": ("history.js", "text/javascript; charset=utf-8"),
    "/history.css": ("history.css", "text/css; charset=utf-8"),
}
"""The only files served: a fixed list, so no path from a request ever reaches the file system."""

SECURITY_HEADERS = {
    # 'self' only: no inline script, no CDN, no eval; the page cannot be framed.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
TOKEN_ENV = "SERD_DASHBOARD_TOKEN"
TOKEN_COOKIE = "serd_dashboard_token"
DRAIN_LIMIT_BYTES = 256 * 1024 * 1024
"""An oversized body up to this size is read and discarded so that the browser sees the 413 answer
(a server that closes mid-upload looks like a network failure); beyond it the connection is dropped."""
MAX_EVENT_CLIENTS = 32
KEEPALIVE_S = 15.0
"""A comment line on an idle event stream this often, so dead connections are noticed."""
EVENT_WAIT_S = 1.0
SOCKET_TIMEOUT_S = 60.0
"""A client that neither sends nor reads for this long is disconnected."""
MIN_TOKEN_CHARS = 16
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{%d,256}$" % MIN_TOKEN_CHARS)
"""Token characters that survive a URL query and a cookie unchanged (what `secrets.token_urlsafe` makes);
16 or more of them: 2,750 guesses a second would need longer than the universe's age for 16 random ones."""
MAX_CONCURRENT_UPLOADS = 2
"""Uploads received at once (each held in memory up to the upload limit); more get 503 at once."""
BUSY_DRAIN_S = 10.0
"""An upload refused as busy is read (and discarded) for at most this long, then the connection closes."""
UPLOAD_MIN_BYTES_PER_S = 64 * 1024
UPLOAD_BASE_DEADLINE_S = 30.0
"""A body must arrive within 30 s plus its size at 64 KB/s (20 MB: 6 min), however it trickles."""


# -- HTTP ------------------------------------------------------------------------------------


def strict_json(obj: Any) -> str:
    """Compact standard JSON; ValueError for NaN/Infinity, which browsers' JSON.parse refuse."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # an open event stream must not hold up shutdown
    request_queue_size = 64
    dashboard: "Dashboard"
    guard: ConnectionGuard
    throttle: GuessThrottle

    def process_request(self, request, client_address) -> None:
        # Admission before a thread is spent on the connection (see serd.dashboard.guard).
        if not self.guard.admit(request, client_address[0]):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        self.guard.release(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # one line, not a traceback
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            _LOGGER.debug("client %s went away: %s", client_address[0], exc)
        else:
            _LOGGER.error("request from %s failed: %s: %s", client_address[0], type(exc).__name__, exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_S

    def version_string(self) -> str:
        return "serd-dashboard"

    def setup(self) -> None:
        super().setup()
        self._reader = DeadlineReader(self.connection, SOCKET_TIMEOUT_S)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        # One deadline for the request line and all headers, however slowly they trickle.
        self._reader.deadline = time.monotonic() + HEADER_DEADLINE_S
        self.server.guard.headers_started(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self._reader.deadline = None  # a body gets its own deadline (see _read_body)
        self.server.guard.headers_done(self.connection)
        return ok

    @property
    def dashboard(self) -> "Dashboard":
        return self.server.dashboard

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        # Requests at debug level, and never the query string: it may hold the token.
        _LOGGER.debug("%s %s", self.address_string(), (format % args).split("?", 1)[0])

    def end_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    # -- responses ---------------------------------------------------------------------------
    def _send_bytes(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        try:
            body = strict_json(obj).encode("utf-8")
        except ValueError as exc:  # the last guard: never a dropped connection, never non-standard JSON
            _LOGGER.error("could not encode an answer: %s", exc)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, b'{"error":"internal error: unencodable value"}'
        self._send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _send_error_json(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": message}, headers)

    # -- access ------------------------------------------------------------------------------
    def _presented(self, url: urllib.parse.SplitResult) -> dict[str, str]:
        """The credentials that came, by kind: a `bearer` or `query` token, a `cookie`."""
        found = {}
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            found["bearer"] = auth[7:].strip()
        query = urllib.parse.parse_qs(url.query)
        if self.command == "GET" and "token" in query:
            found["query"] = query["token"][-1]
        try:
            morsel = SimpleCookie(self.headers.get("Cookie", "")).get(TOKEN_COOKIE)
        except CookieError:
            morsel = None
        if morsel:
            found["cookie"] = morsel.value
        return found

    def _token_ok(self, presented: str | None) -> bool:
        expected = self.dashboard.settings.token
        return presented is not None and hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))

    def _host_ok(self) -> bool:
        """Without a token, a loopback dashboard answers only to loopback host names.

        Stops DNS rebinding: a web page from elsewhere whose name is made to resolve to
        127.0.0.1 would otherwise be able to read the stream through the visitor's browser.
        """
        settings = self.dashboard.settings
        if settings.token or not is_loopback_host(settings.host):
            return True
        host = self.headers.get("Host", "")
        name = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        return is_loopback_host(name)

    def _authorize(self, url: urllib.parse.SplitResult) -> bool:
        """True if the request may proceed; otherwise an answer (401/403/429/redirect) was sent.

        A right token or a valid cookie always gets in, also from a throttled client (see
        serd.dashboard.guard); only wrong tokens are counted, and answered 429 once there were too many.
        """
        if not self._host_ok():
            self._send_error_json(HTTPStatus.FORBIDDEN, "unexpected Host header; open the dashboard via 127.0.0.1")
            return False
        token = self.dashboard.settings.token
        if not token:
            return True
        presented = self._presented(url)
        if "query" in presented and self._token_ok(presented["query"]):
            # Swap the token in the address bar for a cookie the page's scripts cannot read, which
            # carries proof of the token (not the token) and expires.
            query = urllib.parse.parse_qs(url.query)
            rest = urllib.parse.urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs])
            location = url.path + (f"?{rest}" if rest else "")
            cookie = (f"{TOKEN_COOKIE}={session_cookie(token)}; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; "
                      "SameSite=Strict; Path=/")
            self._send_bytes(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": location, "Set-Cookie": cookie})
            return False
        if ("bearer" in presented and self._token_ok(presented["bearer"])
                or "cookie" in presented and cookie_ok(token, presented["cookie"])):
            return True
        if "bearer" in presented or "query" in presented:  # a wrong token: a guess
            client = client_key(self.client_address[0], self.headers.get_all("X-Forwarded-For") or [],
                                self.dashboard.settings.trusted_proxy)
            throttle = self.server.throttle
            if throttle.blocked(client):
                self.close_connection = True
                self._send_error_json(HTTPStatus.TOO_MANY_REQUESTS, "too many wrong tokens; try again in a minute",
                                      {"Retry-After": str(int(throttle.window_s))})
                return False
            if throttle.failed(client):
                _LOGGER.warning("%d wrong access tokens from %s within %.0f s: its wrong tokens are answered 429 "
                                "for the rest of that time", throttle.limit, client, throttle.window_s)
        # A wrong cookie is not a guess (it holds an HMAC, not the token): most likely an expired one, or one
        # made with a token since changed. Not counted.
        what = ("the session cookie has expired or the token changed" if set(presented) == {"cookie"}
                else "access token required")
        self._send_error_json(
            HTTPStatus.UNAUTHORIZED,
            f"{what}: open the dashboard once as /?token=TOKEN, or send Authorization: Bearer TOKEN",
            {"WWW-Authenticate": 'Bearer realm="serd dashboard"'},
        )
        return False

    # -- routes ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not self._authorize(url):
            return
        if url.path in STATIC_FILES:
            name, content_type = STATIC_FILES[url.path]
            self._send_bytes(HTTPStatus.OK, self.dashboard.static(name), content_type)
        elif url.path == "/api/state":
            self._send_json(HTTPStatus.OK, self.dashboard.state.snapshot())
        elif url.path.startswith(HISTORY_PREFIX) and self.dashboard.history is not None:
            self._send_json(*self.dashboard.history.answer(url.path, url.query))
        elif url.path == "/events":
            self._serve_events()
        elif url.path == "/favicon.ico":
            self._send_bytes(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not self._authorize(url):
            self.close_connection = True
            return
        if url.path != "/api/analyze":
            self._send_error_json(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
            return
        slots = self.dashboard.upload_slots
        if not slots.acquire(blocking=False):
            self._drain(self._declared_length(), BUSY_DRAIN_S)
            self._send_error_json(HTTPStatus.SERVICE_UNAVAILABLE,
                                  f"busy receiving {MAX_CONCURRENT_UPLOADS} other recordings; try again in a moment")
            return
        try:
            data, filename = self._read_upload()
            result = self.dashboard.analyzer.analyze(data, filename)
        except UploadError as exc:
            self._send_error_json(exc.status, str(exc))
            return
        finally:
            slots.release()
        self._send_json(HTTPStatus.OK, result)

    def _declared_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length", "0")))
        except ValueError:
            return 0

    def _body_deadline(self, length: int) -> float:
        return time.monotonic() + UPLOAD_BASE_DEADLINE_S + length / UPLOAD_MIN_BYTES_PER_S

    def _read_upload(self) -> tuple[bytes, str]:
        """The request body, whole, in memory (never a temporary file), and the cleaned file name.

        Read in chunks against one deadline for the whole body: a stalled or trickling upload
        loses its slot after `UPLOAD_BASE_DEADLINE_S` plus its size at `UPLOAD_MIN_BYTES_PER_S`.
        """
        limit = self.dashboard.settings.max_upload_bytes
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise UploadError(HTTPStatus.LENGTH_REQUIRED, "send the recording as the request body with a Content-Length")
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise UploadError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length_text!r}") from None
        if length > limit:
            self._drain(length)
            raise UploadError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"file too large ({length / MB:.1f} MB); the limit is {limit / MB:g} MB",
            )
        body = bytearray(length)
        view, got = memoryview(body), 0
        self._reader.deadline = self._body_deadline(length)
        try:
            while got < length:
                n = self.rfile.readinto(view[got:got + (1 << 16)])
                if not n:
                    break
                got += n
        except (TimeoutError, OSError):
            self.close_connection = True
            raise UploadError(HTTPStatus.REQUEST_TIMEOUT, f"upload too slow ({got} of {length} bytes arrived in time)") \
                from None
        finally:
            self._reader.deadline = None
            view.release()
        if got != length:
            self.close_connection = True
            raise UploadError(HTTPStatus.BAD_REQUEST, f"upload cut short ({got} of {length} bytes)")
        data = bytes(body)
        del body
        if not data:
            raise UploadError(HTTPStatus.BAD_REQUEST, "empty upload: choose a recording")
        filename = clean_filename(self.headers.get(FILENAME_HEADER))
        check_extension(filename)
        return data, filename

    def _drain(self, length: int, within_s: float | None = None) -> None:
        """Read and discard a body we refuse, so the browser sees the answer (not a reset); bounded in time."""
        self.close_connection = True
        if length > DRAIN_LIMIT_BYTES:
            return
        remaining = length
        self._reader.deadline = self._body_deadline(length) if within_s is None else time.monotonic() + within_s
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    return
                remaining -= len(chunk)
        except (TimeoutError, OSError):
            return
        finally:
            self._reader.deadline = None

    def _serve_events(self) -> None:
        state = self.dashboard.state
        if state.client_count >= MAX_EVENT_CLIENTS:
            self._send_error_json(HTTPStatus.SERVICE_UNAVAILABLE, f"too many open dashboards (limit {MAX_EVENT_CLIENTS})")
            return
        subscription = state.subscribe()
        self.close_connection = True
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")  # a reverse proxy must not hold events back
            self.end_headers()
            self.wfile.write(b"retry: 2000\n\n")
            last_write = time.monotonic()
            while not self.dashboard.stopping.is_set():
                item = state.next_event(subscription, EVENT_WAIT_S)
                if item is None:
                    if subscription.closed:
                        break
                    if time.monotonic() - last_write >= KEEPALIVE_S:
                        self.wfile.write(b": keepalive\n\n")
                        last_write = time.monotonic()
                    continue
                event, data = item
                try:
                    payload = strict_json(data)
                except ValueError as exc:  # skip the one event; the stream (and the page) stay up
                    _LOGGER.error("could not encode a %s event: %s", event, exc)
                    continue
                self.wfile.write(f"event: {event}\ndata: {payload}\n\n".encode("utf-8"))
                last_write = time.monotonic()
        except (ConnectionError, TimeoutError) as exc:
            _LOGGER.debug("event stream to %s closed: %s", self.address_string(), exc)
        finally:
            state.unsubscribe(subscription)


# -- the whole ---------------------------------------------------------------------------------


class Dashboard:
    """Subscriber + state + web server; `start()`, then `stop()` (from any thread)."""

    def __init__(self, settings: DashboardSettings) -> None:
        if not settings.connect:
            raise DashboardError("nothing to connect to: give at least one --connect endpoint")
        if not is_loopback_host(settings.host) and not settings.token and not settings.allow_insecure:
            raise DashboardError(
                f"listening on {settings.host} exposes the dashboard to the network: set --token "
                f"(or {TOKEN_ENV}), or add --allow-insecure"
            )
        if settings.token is not None and not TOKEN_PATTERN.match(settings.token):
            raise DashboardError(
                f"the token must be {MIN_TOKEN_CHARS}-256 characters of A-Z a-z 0-9 . _ ~ - "
                "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        if not settings.max_upload_bytes > 0:
            raise DashboardError(f"the upload limit must be > 0 bytes, got {settings.max_upload_bytes}")
        self.settings = settings
        self.history = History(settings.db) if settings.db else None
        self.analyzer = Analyzer(settings)
        try:
            self.state = DashboardState(settings.stale_after_s, settings.history_s, info=self._info())
        except ValueError as exc:
            raise DashboardError(str(exc)) from None
        self.reader = StreamReader(settings, self.state)
        self.stopping = threading.Event()
        self.upload_slots = threading.BoundedSemaphore(MAX_CONCURRENT_UPLOADS)
        self._static: dict[str, bytes] = {}
        self._httpd: _Server | None = None
        self._http_thread: threading.Thread | None = None

    def _info(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "model": self.settings.model,
            "model_available": self.analyzer.available(),
            "max_upload_bytes": self.settings.max_upload_bytes,
            "upload_types": list(UPLOAD_EXTENSIONS),
            "max_upload_duration_s": MAX_UPLOAD_DURATION_S,
            "history": self.history is not None,
        }

    def static(self, name: str) -> bytes:
        if name not in self._static:
            self._static[name] = (STATIC_DIR / name).read_bytes()
        return self._static[name]

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() first"
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> None:
        for name, _ in STATIC_FILES.values():
            try:
                self.static(name)
            except OSError as exc:
                raise DashboardError(f"page asset missing: {exc}") from None
        if self.history is not None:
            self.history.check()
        server_class = _Server6 if ":" in self.settings.host else _Server
        try:
            self._httpd = server_class((self.settings.host.strip("[]"), self.settings.port), Handler)
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise DashboardError(f"cannot listen on {self.settings.host}:{self.settings.port}: {reason}") from None
        self._httpd.dashboard = self
        self._httpd.guard = ConnectionGuard(trusted_proxy=self.settings.trusted_proxy)
        self._httpd.throttle = GuessThrottle()
        try:
            self.reader.start_and_wait()
        except DashboardError:
            self._httpd.server_close()
            raise
        self._http_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                             name="serd-dashboard-http", daemon=True)
        self._http_thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.state.close_all()
        if self._httpd is not None:
            if self._http_thread is not None and self._http_thread.is_alive():
                self._httpd.shutdown()
                self._http_thread.join(5.0)
            self._httpd.server_close()
        self.reader.stop()
        if self.history is not None:
            self.history.close()
