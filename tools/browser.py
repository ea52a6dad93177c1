"""A minimal headless-Chromium driver over the DevTools protocol, standard library only.

Used to check that saved figures and reports render in a real browser (tests) and to take
the gallery screenshots. Chromium is started with ``--remote-debugging-pipe``: it reads
DevTools commands from file descriptor 3 and writes replies and events to descriptor 4,
each message a JSON object terminated by a NUL byte. No websocket client, no driver
binary, no network.

Example::

    with Browser() as browser:
        page = browser.new_page(900, 560)
        page.goto(Path("report.html").resolve().as_uri())
        page.wait_for("document.querySelectorAll('.main-svg').length > 0")
        page.screenshot("report.png")
        assert not page.errors
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from headlens.errors import HeadlensError

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--disable-dev-shm-usage")

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable: ``$HEADLENS_CHROMIUM``, then the usual names on PATH."""
    env = os.environ.get("HEADLENS_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    # Debian's /usr/bin/chromium is a launcher script that adds desktop flags; use the binary.
    if os.access("/usr/lib/chromium/chromium", os.X_OK):
        return "/usr/lib/chromium/chromium"
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """A headless Chromium process driven through the DevTools pipe (a context manager)."""

    def __init__(self, executable: str | None = None, *, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise HeadlensError("browser: no chromium found; install it (Debian: apt-get install "
                                "chromium) or set HEADLENS_CHROMIUM to its path")
        self.timeout = timeout
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen | None = None

    # -- process ----------------------------------------------------------------------------
    def __enter__(self) -> Browser:
        self._profile = tempfile.mkdtemp(prefix="headlens-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = [*FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"]
        self._stderr = tempfile.TemporaryFile()

        def pipe_fds() -> None:  # in the child: our pipe ends become fds 3 and 4
            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._proc = subprocess.Popen([self.executable, *args], preexec_fn=pipe_fds, close_fds=False,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=self._stderr)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.call("Browser.getVersion")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self.call("Browser.close", timeout=5)
        except HeadlensError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)
        self._proc = None

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            with self._cond:
                for raw in messages:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cond.notify_all()

    # -- protocol -----------------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one DevTools command and wait for its result (raises on a protocol error)."""
        if self._proc is None:
            raise HeadlensError("browser: not started; use `with Browser() as b:`")
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._to_chrome, data):]
        except OSError as err:
            raise HeadlensError(f"browser: chromium closed the pipe ({err}); {self.stderr_tail()}") from err
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or getattr(self, "_closed", False):
                    raise HeadlensError(f"browser: no reply to {method} "
                                        f"({'chromium exited' if getattr(self, '_closed', False) else 'timeout'}); "
                                        f"{self.stderr_tail()}")
                self._cond.wait(left)
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise HeadlensError(f"browser: {method} failed: {reply['error'].get('message')}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str | None, since: int, timeout: float) -> dict:
        """The first event ``method`` (of ``session``) at index >= ``since`` in :attr:`events`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.events[since:]:
                    if ev.get("method") == method and ev.get("sessionId") == session:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HeadlensError(f"browser: no {method} within {timeout:.0f} s")
                self._cond.wait(left)

    def stderr_tail(self, n: int = 2000) -> str:
        try:
            self._stderr.seek(0)
            return "chromium stderr: " + self._stderr.read().decode(errors="replace")[-n:]
        except (OSError, ValueError):
            return ""

    def new_page(self, width: int = 1200, height: int = 900) -> Page:
        """A fresh tab with the given viewport, collecting console errors and exceptions."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(method, session=session)
        page.set_viewport(width, height)
        return page


class Page:
    """One tab: navigate, evaluate JavaScript, screenshot; :attr:`errors` lists what went wrong."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session
        self._events_from = len(browser.events)

    def set_viewport(self, width: int, height: int) -> None:
        self.browser.call("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                          session=self.session)

    def goto(self, url: str, *, timeout: float = 60.0) -> None:
        """Open ``url`` and wait for its load event."""
        since = len(self.browser.events)
        reply = self.browser.call("Page.navigate", {"url": url}, session=self.session)
        if reply.get("errorText"):
            raise HeadlensError(f"browser: cannot open {url}: {reply['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, since, timeout)

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression (promises awaited); raises if it throws."""
        res = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                     "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in res:
            raise HeadlensError(f"browser: {expression[:60]!r} threw: {_exception_text(res['exceptionDetails'])}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 30.0, interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; returns its value (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise HeadlensError(f"browser: {expression[:80]!r} still false after {timeout:.0f} s")
            time.sleep(interval)

    @property
    def errors(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error-level log entries so far."""
        out = []
        with self.browser._cond:
            events = [e for e in self.browser.events[self._events_from:] if e.get("sessionId") == self.session]
        for ev in events:
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append("exception: " + _exception_text(p.get("exceptionDetails", {})))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                out.append(f"console.{p['type']}: {args}")
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return out

    def screenshot(self, path: str | os.PathLike, *, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or the whole page) to ``path``."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.browser.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.browser.call("Page.captureScreenshot", params, session=self.session)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _exception_text(details: dict) -> str:
    exc = details.get("exception") or {}
    return str(exc.get("description") or details.get("text") or details)


# JavaScript: per plot div, whether plotly drew it (its .main-svg exists).
PLOT_STATUS_JS = """Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => ({
  id: d.id, svg: d.querySelectorAll('.main-svg').length,
  traces: (d.data || []).length, width: d.getBoundingClientRect().width}))"""


def check_plots(page: Page, *, expected: int | None = None, timeout: float = 60.0) -> list[dict]:
    """Wait until every plotly div on ``page`` has its SVG; returns one status dict per div.

    Raises:
        HeadlensError: a div without SVG after ``timeout``, a different number of divs than
            ``expected``, or JavaScript errors on the page.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = page.evaluate(PLOT_STATUS_JS) or []
        ready = status and all(s["svg"] > 0 for s in status) and (expected is None or len(status) >= expected)
        if ready or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    missing = [s["id"] for s in status if s["svg"] == 0]
    if expected is not None and len(status) != expected:
        raise HeadlensError(f"browser: {len(status)} plot divs on the page, expected {expected}")
    if missing:
        raise HeadlensError(f"browser: no SVG drawn for {len(missing)} plot(s): {', '.join(missing)}")
    if page.errors:
        raise HeadlensError("browser: JavaScript errors: " + " | ".join(page.errors))
    return status
