"""Opens a page in headless Chromium through the DevTools protocol (aiohttp's websocket client,
in the lock) and reports what a reader would meet: console errors, uncaught exceptions, failed
loads, images that did not decode and players whose audio did not load; with a screenshot."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--remote-debugging-port=0",
    "--window-size=1280,1600",
]

# Resolves once every <img> has decoded or failed and every <audio> has loaded its metadata or
# failed (or 20 s passed); returns the ones that failed, and what was checked.
CHECK_MEDIA = """
(async () => {
  const wait = (el, ok, bad) => new Promise(resolve => {
    const t = setTimeout(() => resolve('timeout'), 20000);
    el.addEventListener(ok, () => { clearTimeout(t); resolve('ok'); }, {once: true});
    el.addEventListener(bad, () => { clearTimeout(t); resolve('error'); }, {once: true});
  });
  const failures = [];
  const imgs = [...document.images];
  await Promise.all(imgs.map(async img => {
    if (!img.complete) await wait(img, 'load', 'error');
    if (!(img.naturalWidth > 0)) failures.push({tag: 'img', src: img.getAttribute('src')});
  }));
  const audios = [...document.querySelectorAll('audio')];
  await Promise.all(audios.map(async a => {
    if (a.readyState < 1 && !a.error) {
      const p = wait(a, 'loadedmetadata', 'error');
      a.preload = 'metadata';
      a.load();
      await p;
    }
    if (a.error || a.readyState < 1 || !(a.duration > 0))
      failures.push({tag: 'audio', src: a.getAttribute('src'),
                     error: a.error ? a.error.code : null, readyState: a.readyState});
  }));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
  return {failures, images: imgs.length, audios: audios.length, links,
          title: document.title, height: document.documentElement.scrollHeight};
})()
"""


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    failed_loads: list[str] = field(default_factory=list)
    media_failures: list[dict] = field(default_factory=list)
    images: int = 0
    audios: int = 0
    links: list[str] = field(default_factory=list)
    title: str = ""
    screenshot: Path | None = None


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def ensure_chromium() -> tuple[str | None, str]:
    """The chromium binary, installing Debian's package with scripts/setup_browser.sh when
    it is missing; (None, why) when it cannot be installed here."""
    found = find_chromium()
    if found:
        return found, ""
    result = subprocess.run(
        ["bash", str(REPO / "scripts/setup_browser.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = find_chromium()
    if found:
        return found, ""
    tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
    return None, "chromium is not installed and scripts/setup_browser.sh could not install it: " + (
        " | ".join(tail) or f"exit {result.returncode}"
    )


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            text = port_file.read_text().split()
            if text:
                return int(text[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


class _Session:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    async def call(self, method: str, **params):
        self.next_id += 1
        msg_id = self.next_id
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    async def wait_event(self, method: str, timeout: float):
        for event in self.events:
            if event.get("method") == method:
                return event
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads((await self.ws.receive()).data)
                self.events.append(msg)
                if msg.get("method") == method:
                    return msg


async def _inspect(port: int, url: str, screenshot: Path | None, report: PageReport) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            s = _Session(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await s.call(f"{domain}.enable")
            await s.call("Page.navigate", url=url)
            await s.wait_event("Page.loadEventFired", timeout=60)
            result = await s.call(
                "Runtime.evaluate", expression=CHECK_MEDIA, awaitPromise=True, returnByValue=True
            )
            if "exceptionDetails" in result:
                raise RuntimeError(f"the media check failed: {result['exceptionDetails']}")
            value = result["result"]["value"]
            report.media_failures = value["failures"]
            report.images, report.audios = value["images"], value["audios"]
            report.links, report.title = value["links"], value["title"]
            if screenshot is not None:
                await s.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=1280,
                    height=min(int(value["height"]), 2400),
                    deviceScaleFactor=1,
                    mobile=False,
                )
                shot = await s.call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                report.screenshot = screenshot
            await asyncio.sleep(0.2)  # late console messages
            await s.call("Runtime.evaluate", expression="1")
    for event in s.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            what = details.get("exception", {}).get("description") or details.get("text")
            report.console_errors.append(
                f"{what} at {details.get('url', '')}:{details.get('lineNumber')}"
            )
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description")) for a in params.get("args", [])]
            report.console_errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            report.console_errors.append(
                f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}"
            )
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            report.failed_loads.append(f"{params.get('errorText')} (request {params['requestId']})")


def _stop_process_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _remove_profile(profile: Path) -> None:
    # a child already reparented away from the group may still flush a file for a moment
    for _ in range(20):
        shutil.rmtree(profile, ignore_errors=True)
        if not profile.exists():
            return
        time.sleep(0.25)
    shutil.rmtree(profile)


def inspect_page(path: Path, screenshot: Path | None = None, chromium: str | None = None):
    """Open ``path`` from file:// in headless Chromium; a PageReport of what went wrong."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed")
    report = PageReport()
    profile = Path(tempfile.mkdtemp(prefix="eisbach-chromium-"))
    # its own session, so that the renderer, GPU and crashpad children are stopped with it:
    # one left running writes into the profile while it is being removed (ENOTEMPTY in CI)
    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = _devtools_port(profile, proc)
        url = Path(path).resolve().as_uri()
        asyncio.run(_inspect(port, url, screenshot, report))
    finally:
        _stop_process_group(proc)
        _remove_profile(profile)
    return report
