"""Headless Chromium driven over the DevTools protocol: open a page with HTTP headers on every
request (basic-auth credentials), wait until its text shows what we expect, take a screenshot.

Chromium strips credentials embedded in a URL from the requests a page's scripts make, so the
MLflow UI behind basic auth needs the header on every request, as a logged-in browser sends it.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp


class Page:
    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        await self.socket.send_str(
            json.dumps({"id": message_id, "method": method, "params": params})
        )
        while True:
            answer = json.loads((await self.socket.receive(timeout=60)).data)
            if answer.get("id") == message_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expect: str | None, timeout_s: float) -> str:
        """The page's text once it contains `expect` (or at the deadline); with None, after
        the page's requests had a few seconds to settle."""
        if expect is None:
            await asyncio.sleep(5)
            return await self.text()
        deadline = time.monotonic() + timeout_s
        text = await self.text()
        while expect not in text and time.monotonic() < deadline:
            await asyncio.sleep(1)
            text = await self.text()
        return text

    async def text(self) -> str:
        result = await self.call(
            "Runtime.evaluate",
            expression="document.body ? document.body.innerText : ''",
            returnByValue=True,
        )
        return re.sub(r"\s+", " ", str(result["result"].get("value", "")))


async def _render(
    browser: str,
    url: str,
    headers: dict[str, str],
    profile: Path,
    expect: str | None,
    screenshot: Path | None,
    timeout_s: float,
    then: list[tuple[str, str]],
) -> str:
    profile.mkdir(parents=True, exist_ok=True)
    port_file = profile / "DevToolsActivePort"
    port_file.unlink(missing_ok=True)  # a previous run's
    process = subprocess.Popen(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1600,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert process.poll() is None and time.monotonic() < deadline, "chromium did not start"
            await asyncio.sleep(0.2)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                page = Page(socket)
                await page.call("Network.enable")
                await page.call("Network.setExtraHTTPHeaders", headers=headers)
                await page.call("Page.enable")
                await page.call("Page.navigate", url=url)
                text = await page.wait_for(expect, timeout_s)
                for action, result in then:
                    if expect is not None and expect not in text:
                        break  # the page never got there: return what it shows
                    await page.evaluate(action)
                    text = await page.wait_for(expect := result, timeout_s)
                if screenshot is not None:
                    shot = await page.call("Page.captureScreenshot", format="png")
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                return text
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def render(
    browser: str,
    url: str,
    profile: Path,
    headers: dict[str, str] | None = None,
    expect: str | None = None,
    screenshot: Path | None = None,
    timeout_s: float = 60,
    then: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
) -> str:
    """The visible text of `url` once it contains `expect` (or after `timeout_s`); `then`:
    JavaScript actions (a click) each followed by the text to wait for. The screenshot is
    taken at the end."""
    return asyncio.run(
        _render(browser, url, headers or {}, profile, expect, screenshot, timeout_s, list(then))
    )


def basic_auth(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
