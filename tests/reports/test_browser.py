"""The report as a reader's browser shows it: headless Chromium opens index.html, every figure decodes, and
the page carries no script.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON messages
ending in NUL on file descriptors 3 and 4), so the check runs in the browser without adding anything to the
page and without a websocket client. CI installs Debian's `chromium` (.ci/run).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess

import pytest

from reports import build_report

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]

# Evaluated by the DevTools protocol once the page has loaded; the page itself stays script-free.
INSPECT = """(async () => {
  const imgs = [...document.images];
  const decoded = await Promise.all(imgs.map(i => i.decode().then(() => true, () => false)));
  const handlers = [...document.querySelectorAll('*')].flatMap(
      e => [...e.attributes].map(a => a.name).filter(n => n.startsWith('on')));
  return {ready: document.readyState, title: document.title, decoded,
          widths: imgs.map(i => i.naturalWidth), scripts: document.scripts.length, handlers,
          details: document.querySelectorAll('details').length};
})()"""


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int):
        self.proc, self.out, self.inp = proc, os.fdopen(to_browser, "wb"), os.fdopen(from_browser, "rb")
        self.next_id, self.buffer = 0, b""

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.out.write(json.dumps(message).encode() + b"\0")
        self.out.flush()
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_for(self, event: str, session: str) -> None:
        while True:
            message = self._read()
            if message.get("method") == event and message.get("sessionId") == session:
                return

    def _read(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.inp.fileno(), 1 << 16)
            if not chunk:
                raise AssertionError(f"chromium closed the pipe (exit status {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


def open_in_chromium(url: str, profile) -> dict:
    """Load `url` in headless Chromium and return what INSPECT finds there."""
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def child_fds():  # the debugging pipe is fd 3 (commands in) and fd 4 (replies out)
        # Moved above 4 first: a pipe end may already be 3 or 4, and dup2 onto itself would stay close-on-exec.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        os.dup2(high[0], 3)
        os.dup2(high[1], 4)

    # close_fds=False: the dup2'd 3 and 4 are the only inheritable descriptors (Python opens none so).
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            close_fds=False, preexec_fn=child_fds,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_browser_r)
    os.close(from_browser_w)
    devtools = DevTools(proc, to_browser_w, from_browser_r)
    try:
        target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
        session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        devtools.call("Page.enable", session)
        devtools.call("Page.navigate", session, url=url)
        devtools.wait_for("Page.loadEventFired", session)
        result = devtools.call("Runtime.evaluate", session, expression=INSPECT, awaitPromise=True,
                               returnByValue=True)
        return result["result"]["value"]
    finally:
        try:
            devtools.call("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install -y chromium)")
def test_report_opens_in_a_browser_with_every_figure_and_no_script(make_run, tmp_path):
    report = build_report(make_run(seed=3, hostile=True), tmp_path / "report", n_bootstrap=6)
    page = (report / "index.html").read_text(encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    seen = open_in_chromium((report / "index.html").as_uri(), profile)
    assert seen["ready"] == "complete" and seen["title"].startswith("Sensitivity report")
    assert len(seen["widths"]) == page.count("<img ") >= 3
    assert all(seen["decoded"]) and all(w > 0 for w in seen["widths"]), seen
    assert seen["scripts"] == 0 and seen["handlers"] == [], seen  # the hostile samples stayed text
