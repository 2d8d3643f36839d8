"""A local HTTP server on 127.0.0.1 for the real yt-dlp: one media file at /media/<name>.m4a.

It stands for YouTube's media servers at the one boundary no machine here reaches. yt-dlp's
generic extractor first asks for the URL itself (its "probe": the answer's Content-Type says that
this is a direct media link), then ffmpeg reads the media with Range requests to cut the section.
The two are told apart by the Range header, which ffmpeg always sends and the probe never does
(yt-dlp gives ffmpeg its own User-Agent). The server answers both as a plain file server would
(200, or 206 for a Range), except where a
failure is injected for a name: each of yt-dlp's probes for that name takes the next entry of its
fault list (404, 429, 503, or "drop": the connection closed without an answer); once the list is
used up the name is served normally. Every request is logged, so that tests count downloads.

Also here: :func:`make_media`, the AAC file that is served, rendered from a seeded signal.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import soundfile as sf

FAULT_STATUS = {
    "404": (404, "Not Found"),
    "429": (429, "Too Many Requests"),
    "503": (503, "Service Unavailable"),
}
FAULTS = (*FAULT_STATUS, "drop")
PATH = re.compile(r"^/media/(?P<name>[A-Za-z0-9_-]+)\.m4a$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def make_media(path: Path, ffmpeg: str, seconds: float = 12.0, rate: int = 44100) -> np.ndarray:
    """Writes `seconds` of a seeded, nowhere-periodic signal (a chirp under band-limited noise)
    as AAC in an .m4a, as YouTube serves audio; returns the samples it encoded (mono float32)."""
    rng = np.random.default_rng(25)
    t = np.arange(int(seconds * rate)) / rate
    chirp = np.sin(2 * np.pi * (200 * t + 40 * t**2))
    noise = np.convolve(rng.standard_normal(t.size), np.ones(8) / 8, mode="same")
    signal = (0.3 * chirp + 0.5 * noise).astype(np.float32)
    wav = path.with_suffix(".source.wav")
    sf.write(wav, signal, rate, subtype="FLOAT")
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(wav)]
    argv += ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(path)]
    subprocess.run(argv, check=True)
    wav.unlink()
    return signal


@dataclass
class Request:
    name: str
    at: float  # time.monotonic() when it arrived
    by_ffmpeg: bool  # ffmpeg's media reads (with a Range header), else yt-dlp's probe
    status: int  # 0: dropped without an answer
    range: str
    sent_all: bool = False  # the whole media file went out in this answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up (the probe reads only the headers; a killed ffmpeg)


class MediaServer:
    """``with MediaServer(media) as server:`` ... ``server.url_template`` for data.url_template."""

    def __init__(self, media: bytes, faults: dict[str, list[str]] | None = None):
        self.media = media
        self.faults = {name: list(kinds) for name, kinds in (faults or {}).items()}
        for kinds in self.faults.values():
            unknown = set(kinds) - set(FAULTS)
            if unknown:
                raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url_template(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/media/{{ytid}}.m4a"

    def __enter__(self) -> MediaServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def log(self, name: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if name is None or r.name == name]

    def media_reads(self, name: str) -> int:
        """How many times ffmpeg was sent the whole media file of `name`: its downloads."""
        return sum(1 for r in self.log(name) if r.by_ffmpeg and r.sent_all)

    def probes(self, name: str) -> list[Request]:
        return [r for r in self.log(name) if not r.by_ffmpeg]

    def _next_fault(self, name: str, by_ffmpeg: bool) -> str | None:
        with self.lock:
            kinds = self.faults.get(name)
            if by_ffmpeg or not kinds:
                return None
            return kinds.pop(0)

    def _record(self, *args) -> Request:
        request = Request(*args)
        with self.lock:
            self.requests.append(request)
        return request

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the log is server.requests
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                arrived = time.monotonic()
                match = PATH.match(self.path)
                by_ffmpeg = "Range" in self.headers
                asked = self.headers.get("Range", "")
                if not match:
                    self._status(404, "Not Found")
                    return
                name = match["name"]
                fault = server._next_fault(name, by_ffmpeg)
                if fault == "drop":
                    server._record(name, arrived, by_ffmpeg, 0, asked)
                    self.close_connection = True
                    return
                if fault:
                    server._record(name, arrived, by_ffmpeg, FAULT_STATUS[fault][0], asked)
                    self._status(*FAULT_STATUS[fault], retry_after=fault == "429")
                    return
                data, status, extra = server.media, 200, {}
                size = len(data)
                ranged = RANGE.match(asked)
                if ranged and (ranged[1] or ranged[2]):
                    if ranged[1]:
                        lo = int(ranged[1])
                        hi = min(int(ranged[2]), size - 1) if ranged[2] else size - 1
                    else:  # the last N bytes
                        lo, hi = max(size - int(ranged[2]), 0), size - 1
                    if lo >= size or lo > hi:
                        server._record(name, arrived, by_ffmpeg, 416, asked)
                        self._status(416, "Range Not Satisfiable", content_range=f"bytes */{size}")
                        return
                    data, status = data[lo : hi + 1], 206
                    extra["Content-Range"] = f"bytes {lo}-{hi}/{size}"
                request = server._record(name, arrived, by_ffmpeg, status, asked)
                self.send_response(status)
                self.send_header("Content-Type", "audio/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(data)
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True  # the probe reads only the headers
                        return
                    with server.lock:
                        request.sent_all = len(data) == size

            def _status(self, code, text, retry_after=False, content_range=None):
                payload = f"{code} {text}\n".encode()
                self.send_response(code, text)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                if retry_after:
                    self.send_header("Retry-After", "1")
                if content_range:
                    self.send_header("Content-Range", content_range)
                self.end_headers()
                self.wfile.write(payload)

        return Handler


# The bulk run's injected failures (tests/test_ytdlp_real.py, benchmarks/data_download.py): per
# class, (how many clips, the fault list of each, the status its clip must end with, the tries).
BULK_FAULTS = {
    "http404": (10, ["404"], "unavailable", 1),
    "http503_once": (10, ["503"], "ok", 2),
    "dropped_once": (10, ["drop"], "ok", 2),
    "http429_once": (10, ["429"], "ok", 2),
    "http503_always": (5, ["503"] * 3, "transient", 3),
}


def bulk_ytid(i: int) -> str:
    return f"bulk{i:07d}"


def bulk_plan(n: int) -> tuple[list[str], dict[str, list[str]], dict[str, tuple[str, int]]]:
    """n ytids, the server's faults for them, and each one's expected (status, attempts) with
    data.max_attempts 3: the faulty clips are spread evenly through the rows."""
    ytids = [bulk_ytid(i) for i in range(n)]
    n_faulty = sum(count for count, *_ in BULK_FAULTS.values())
    if n < 2 * n_faulty:
        raise ValueError(f"a bulk plan needs at least {2 * n_faulty} clips")
    step = n // n_faulty
    kinds = [k for k, (count, *_) in BULK_FAULTS.items() for _ in range(count)]
    faults, expected = {}, {y: ("ok", 1) for y in ytids}
    for j, kind in enumerate(kinds):
        y = ytids[j * step]
        _, fault, status, attempts = BULK_FAULTS[kind]
        faults[y] = list(fault)
        expected[y] = (status, attempts)
    return ytids, faults, expected
