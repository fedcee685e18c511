"""A real headless Chromium, driven over the Chrome DevTools Protocol with aiohttp alone.

Debian's `chromium` package (apt-get install chromium) is the browser; no Playwright or
Selenium download. `Chromium.start()` launches it with a throwaway profile and attaches to its
first tab; `evaluate`, `type_and_enter`, `wait_for` and `screenshot` are all the tests need.
`chromium_problem()` says why no browser can run; `require_chromium()` turns that into a skip
locally and a failure in CI, like the Asterisk sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1440,1100")


def chromium_binary() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_problem() -> str | None:
    if chromium_binary() is None:
        return "no Chromium found (apt-get install -y chromium)"
    return None


def require_chromium() -> None:
    problem = chromium_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set but the browser tests cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


class Chromium:
    """One headless Chromium process and a CDP session on its first tab."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._profile = Path(tempfile.mkdtemp(prefix="bridge-chromium-"))
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []  # console messages and exceptions from the page

    async def start(self) -> None:
        binary = chromium_binary()
        assert binary is not None, chromium_problem()
        self._process = await asyncio.create_subprocess_exec(
            binary, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-port=0",
            "about:blank", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True)  # its own process group: stop() ends every helper
        port_file = self._profile / "DevToolsActivePort"
        async with asyncio.timeout(20):
            while not port_file.is_file() or not port_file.read_text().strip():
                if self._process.returncode is not None:
                    raise RuntimeError(f"chromium exited with {self._process.returncode}")
                await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with asyncio.timeout(10):
            while True:
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as reply:
                    targets = await reply.json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    break
                await asyncio.sleep(0.1)
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                                  max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Runtime.enable")
        await self.send("Page.enable")

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                await self._process.wait()
            with contextlib.suppress(ProcessLookupError):  # helpers left in the group
                os.killpg(self._process.pid, signal.SIGKILL)
        shutil.rmtree(self._profile, ignore_errors=True)

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description")))
                                             for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(data["params"]["exceptionDetails"]))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 15)
        if "error" in reply:
            raise RuntimeError(f"CDP {method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        try:
            async with asyncio.timeout(timeout):
                while not (value := await self.evaluate(expression)):
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"the page never made {expression!r} true within {timeout} s; "
                                 f"console: {self.console[-10:]}") from None
        return value

    async def type_and_enter(self, selector: str, text: str) -> None:
        """Click into the field, type `text` as keyboard input, press Enter."""
        focused = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.focus(); return document.activeElement === e; })()")
        assert focused, f"no field {selector!r} to type into"
        await self.send("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                            windowsVirtualKeyCode=13, nativeVirtualKeyCode=13,
                            **({"text": "\r"} if kind == "keyDown" else {}))

    async def screenshot(self, path: str | Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(path).write_bytes(base64.b64decode(shot["data"]))


def text_of(selector: str) -> str:
    """JavaScript: the visible text of the first element matching `selector` ("" if none)."""
    return f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText"
