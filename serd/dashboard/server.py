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
import ipaddress
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from serd import __version__
from serd.dashboard.state import STALE_AFTER_S, HISTORY_S, DashboardState
from serd.messages import EMOTION_PREFIX, STATUS_PREFIX, MessageError, decode

_LOGGER = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
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
FILENAME_HEADER = "X-Filename"
UPLOAD_EXTENSIONS = (".wav", ".flac", ".ogg")
MB = 1024 * 1024
MAX_UPLOAD_BYTES = 20 * MB
MAX_UPLOAD_DURATION_S = 5 * 60.0
"""Longer recordings are refused: `analyze_file` holds every window in memory (about 15 MB per minute at
16 kHz and a 0.5 s hop) and on a Pi each minute costs seconds of CPU that the live view shares."""
DRAIN_LIMIT_BYTES = 256 * 1024 * 1024
"""An oversized body up to this size is read and discarded so that the browser sees the 413 answer
(a server that closes mid-upload looks like a network failure); beyond it the connection is dropped."""
ANALYSIS_WAIT_S = 60.0
"""How long an upload waits for the one running analysis before getting 503 (one model, one core)."""
MAX_EVENT_CLIENTS = 32
KEEPALIVE_S = 15.0
"""A comment line on an idle event stream this often, so dead connections are noticed."""
EVENT_WAIT_S = 1.0
SOCKET_TIMEOUT_S = 60.0
"""A client that neither sends nor reads for this long is disconnected (also bounds a stalled upload)."""
ZMQ_POLL_MS = 250
"""The subscriber wakes at least this often to check staleness and whether to stop."""
ZMQ_BATCH = 1000
"""Messages taken per wake-up before checking staleness again."""
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{1,256}$")
"""Token characters that survive a URL query and a cookie unchanged (what `secrets.token_urlsafe` makes)."""


class DashboardError(RuntimeError):
    """The dashboard cannot start; one line for the user."""


@dataclass(frozen=True)
class DashboardSettings:
    connect: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    """serd publishers to subscribe to (ZeroMQ endpoints)."""
    host: str = "127.0.0.1"
    port: int = 8080
    """Where the web page is served; port 0 picks a free port."""
    token: str | None = None
    """Access token; required when `host` is not loopback (unless `allow_insecure`)."""
    allow_insecure: bool = False
    model: str = "serd-emotion6-int8"
    """Model for the upload panel: a name in the models directory or a .tflite path."""
    server_key: Path | None = None
    client_key: Path | None = None
    stale_after_s: float = STALE_AFTER_S
    history_s: float = HISTORY_S
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    hop_s: float = 0.5
    """Upload analysis: seconds between windows (as `serd analyze`)."""
    gate_dbfs: float = -55.0
    """Upload analysis: speech gate level (as `serd analyze`)."""
    extra_headers: dict[str, str] = field(default_factory=dict)


def is_loopback_host(host: str) -> bool:
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `PORT` -> (host, port); ValueError with what was expected."""
    value = value.strip()
    if value.isdigit():
        host, port_text = "127.0.0.1", value
    elif value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"--listen {value!r}: expected [IPv6]:PORT, e.g. [::1]:8080")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {value!r}: port must be a number 0-65535")
    return host, int(port_text)


# -- the ZeroMQ side --------------------------------------------------------------------------


class StreamReader(threading.Thread):
    """Owns the SUB socket from creation to close; nothing else touches it."""

    def __init__(self, settings: DashboardSettings, state: DashboardState) -> None:
        super().__init__(name="serd-dashboard-zmq", daemon=True)
        self.settings = settings
        self.state = state
        self.error: str | None = None
        self._stop_requested = threading.Event()
        self._connected = threading.Event()

    def start_and_wait(self, timeout: float = 10.0) -> None:
        self.start()
        if not self._connected.wait(timeout):
            raise DashboardError("the ZeroMQ subscriber did not start")
        if self.error:
            raise DashboardError(self.error)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        import zmq

        from serd.listen import connect

        try:
            sub = connect(list(self.settings.connect), [EMOTION_PREFIX, STATUS_PREFIX],
                          self.settings.server_key, self.settings.client_key)
        except (ValueError, OSError, zmq.ZMQError) as exc:
            self.error = f"cannot subscribe to {', '.join(self.settings.connect)}: {exc}"
            self._connected.set()
            return
        self._connected.set()
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        try:
            while not self._stop_requested.is_set():
                if poller.poll(ZMQ_POLL_MS):
                    for _ in range(ZMQ_BATCH):
                        try:
                            frames = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._handle(frames)
                self.state.check_stale()
        except zmq.ZMQError as exc:  # the context was terminated under us: nothing more to read
            _LOGGER.error("ZeroMQ subscriber stopped: %s", exc)
        finally:
            sub.close(linger=0)

    def _handle(self, frames: list[bytes]) -> None:
        try:
            message = decode(frames)
        except MessageError as exc:
            self.state.count_malformed()
            log = _LOGGER.warning if self.state.malformed == 1 else _LOGGER.debug
            log("skipped a malformed message (%s)", exc)
            return
        self.state.apply(message)


# -- the upload panel ------------------------------------------------------------------------


class UploadError(ValueError):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Analyzer:
    """Loads the model on first use and runs one analysis at a time (one interpreter, one core)."""

    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._model = None

    def model_path(self) -> Path:
        from serd.model import resolve_model_path

        return resolve_model_path(self.settings.model)

    def available(self) -> bool:
        path = self.model_path()
        return path.is_file() and path.with_suffix(".json").is_file()

    def _load(self):
        from serd.model import Model, ModelError

        if self._model is None:
            try:
                self._model = Model(self.model_path())
            except ModelError as exc:
                raise UploadError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"model not available: {exc} (start the dashboard with --model NAME_OR_PATH)",
                ) from None
            _LOGGER.info("upload analysis: model %s (%s)", self._model.model_id, self._model.backend)
        return self._model

    def analyze(self, data: bytes, filename: str) -> dict[str, Any]:
        from serd.analysis import GateSettings, analyze_file, result_to_json
        from serd.audiofile import AudioFileError, file_duration_s

        if not self._lock.acquire(timeout=ANALYSIS_WAIT_S):
            raise UploadError(HTTPStatus.SERVICE_UNAVAILABLE, "busy with another recording; try again in a moment")
        try:
            model = self._load()
            audio = io.BytesIO(data)
            audio.name = filename  # how error messages name it; the bytes never leave memory
            try:
                duration_s = file_duration_s(audio)
                if duration_s > MAX_UPLOAD_DURATION_S:
                    raise UploadError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"{filename}: recording too long ({duration_s / 60:.1f} min; "
                        f"the limit is {MAX_UPLOAD_DURATION_S / 60:.0f} min)",
                    )
                audio.seek(0)
                gate = GateSettings(threshold_dbfs=self.settings.gate_dbfs, hangover=1)
                result = analyze_file(audio, model, self.settings.hop_s, gate)
            except AudioFileError as exc:
                raise UploadError(HTTPStatus.BAD_REQUEST, str(exc)) from None
            body = result_to_json(result, filename)
            body.update(
                labels=list(model.labels),
                model=model.model_id,
                duration_s=round(duration_s, 3),
                window_s=model.params.window_samples / model.params.sample_rate,
                hop_s=self.settings.hop_s,
                speech_windows=sum(1 for w in result.windows if w.speech),
            )
            return body
        finally:
            self._lock.release()


def clean_filename(raw: str | None) -> str:
    """The upload's base name, URL-decoded, without control characters (it is echoed to the page)."""
    if not raw:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"send the file name in the {FILENAME_HEADER} header")
    name = urllib.parse.unquote(raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:200].strip()
    if not name:
        raise UploadError(HTTPStatus.BAD_REQUEST, f"{FILENAME_HEADER}: empty file name")
    return name


def check_extension(filename: str) -> None:
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_EXTENSIONS:
        raise UploadError(
            HTTPStatus.BAD_REQUEST,
            f"{filename}: unsupported file type {suffix or '(none)'}; choose a {', '.join(UPLOAD_EXTENSIONS)} recording",
        )


# -- HTTP ------------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # an open event stream must not hold up shutdown
    dashboard: "Dashboard"

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
        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
        self._send_bytes(status, body, "application/json; charset=utf-8", headers)

    def _send_error_json(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": message}, headers)

    # -- access ------------------------------------------------------------------------------
    def _presented_token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel.value if morsel else None

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
        """True if the request may proceed; otherwise an answer (401/403/redirect) was sent."""
        if not self._host_ok():
            self._send_error_json(HTTPStatus.FORBIDDEN, "unexpected Host header; open the dashboard via 127.0.0.1")
            return False
        if not self.dashboard.settings.token:
            return True
        query = urllib.parse.parse_qs(url.query)
        if self.command == "GET" and "token" in query:
            if self._token_ok(query["token"][-1]):
                # Swap the token in the address bar for a cookie the page's scripts cannot read.
                rest = urllib.parse.urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs])
                location = url.path + (f"?{rest}" if rest else "")
                cookie = f"{TOKEN_COOKIE}={self.dashboard.settings.token}; HttpOnly; SameSite=Strict; Path=/"
                self._send_bytes(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": location, "Set-Cookie": cookie})
                return False
        elif self._token_ok(self._presented_token()):
            return True
        self._send_error_json(
            HTTPStatus.UNAUTHORIZED,
            "access token required: open the dashboard once as /?token=TOKEN, or send Authorization: Bearer TOKEN",
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
        try:
            data, filename = self._read_upload()
            result = self.dashboard.analyzer.analyze(data, filename)
        except UploadError as exc:
            self._send_error_json(exc.status, str(exc))
            return
        self._send_json(HTTPStatus.OK, result)

    def _read_upload(self) -> tuple[bytes, str]:
        """The request body, whole, in memory (never a temporary file), and the cleaned file name."""
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
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise UploadError(HTTPStatus.BAD_REQUEST, f"upload cut short ({len(data)} of {length} bytes)")
        if not data:
            raise UploadError(HTTPStatus.BAD_REQUEST, "empty upload: choose a recording")
        filename = clean_filename(self.headers.get(FILENAME_HEADER))
        check_extension(filename)
        return data, filename

    def _drain(self, length: int) -> None:
        self.close_connection = True
        if length > DRAIN_LIMIT_BYTES:
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)

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
                payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
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
                "the token must be 1-256 characters of A-Z a-z 0-9 . _ ~ - "
                "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        if not settings.max_upload_bytes > 0:
            raise DashboardError(f"the upload limit must be > 0 bytes, got {settings.max_upload_bytes}")
        self.settings = settings
        self.analyzer = Analyzer(settings)
        try:
            self.state = DashboardState(settings.stale_after_s, settings.history_s, info=self._info())
        except ValueError as exc:
            raise DashboardError(str(exc)) from None
        self.reader = StreamReader(settings, self.state)
        self.stopping = threading.Event()
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
        server_class = _Server6 if ":" in self.settings.host else _Server
        try:
            self._httpd = server_class((self.settings.host.strip("[]"), self.settings.port), Handler)
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise DashboardError(f"cannot listen on {self.settings.host}:{self.settings.port}: {reason}") from None
        self._httpd.dashboard = self
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
