"""A headless Chromium driven over the DevTools protocol for the page tests: the protocol over a pipe
(--remote-debugging-pipe: JSON messages ended by a NUL byte on file descriptors 3 and 4), so that nothing
beyond the standard library is needed. `Browser.js` evaluates an expression in the page (awaiting a
promise), `key` presses a key as the keyboard does (trusted events), `wait_for` polls an expression."""

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> Optional[str]:
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, profile: Path, width: int = 1200, height: int = 900) -> None:
        browser = find_browser()
        if browser is None:
            raise BrowserError("no Chromium: apt-get install chromium")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def onto_3_and_4() -> None:  # the descriptors --remote-debugging-pipe reads and writes
            reading, writing = os.dup(to_browser_r), os.dup(from_browser_w)  # neither can be 3 and 4 swapped
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        command = [browser, "--headless=new", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run"]
        command += [f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.process = subprocess.Popen(
            command, preexec_fn=onto_3_and_4, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        self.events: list = []
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)

    def send(self, method: str, session: bool = False, timeout: float = 60, **params: Any) -> Dict[str, Any]:
        self._id += 1
        message: Dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self._read()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)
        raise BrowserError(f"{method}: no answer within {timeout} s")

    def _read(self) -> Dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def js(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", session=True, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.05)
        raise BrowserError(f"still false after {timeout} s: {expression}")

    def open(self, url: str, ready: str = "document.readyState === 'complete'") -> None:
        self.send("Page.navigate", session=True, url=url)
        time.sleep(0.1)
        self.wait_for(ready)

    def key(self, key: str, code: str, keycode: int, modifiers: int = 0, text: str = "") -> None:
        """A key press (modifiers: 2 Ctrl, 4 Meta/Cmd); `text` for a key that types, e.g. "\\r" for Enter."""
        down = dict(key=key, code=code, windowsVirtualKeyCode=keycode, modifiers=modifiers)
        self.send("Input.dispatchKeyEvent", session=True, type="keyDown" if text else "rawKeyDown", text=text, **down)
        self.send("Input.dispatchKeyEvent", session=True, type="keyUp", **down)

    def click(self, selector: str) -> None:
        """A mouse click in the middle of the element (a user gesture, as the clipboard wants)."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left", clickCount=1
            )

    def type(self, text: str) -> None:
        self.send("Input.insertText", session=True, text=text)

    def screenshot(self, path: Path, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = self.send("Page.captureScreenshot", session=True)
        Path(path).write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
