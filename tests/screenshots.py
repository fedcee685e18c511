"""The README's screenshots of `bridge demo`: the compose modal with its picker open, and the
Home tab. Runs the demo (real Asterisk, needs root and the sandbox) and a headless Chromium
(tests/cdp_browser.py), does what a user would, and saves docs/demo-modal.png and
docs/demo-home.png.

    sudo .venv/bin/python tests/screenshots.py     # about 20 s; --out DIR to save elsewhere

Emoji (presence dots, ✅) need a colour emoji font for Chromium: apt-get install
fonts-noto-color-emoji, or they show as empty boxes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path

from cdp_browser import Chromium, chromium_problem, text_of

from bridge.demo.runner import Demo
from bridge.sandbox.launcher import default_sandbox_dir, sandbox_problem

REPO = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1280, 640


async def shoot(page: Chromium, path: Path) -> None:
    """The viewport only (not the whole page): what a user sees at that moment."""
    shot = await page.send("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"saved {path}")


async def take(out: Path) -> None:
    demo = Demo(port=0)
    browser = Chromium()
    await demo.start()
    try:
        await browser.start()
        await browser.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                           deviceScaleFactor=1, mobile=False)
        await browser.goto(demo.url)
        await browser.wait_for("document.querySelectorAll('[data-phone]').length === 2")
        # Something to show: a text from bob's phone, one sent to alice, bob then switched off.
        await browser.type_and_enter("[data-phone=bob] input", "Running 10 minutes late, sorry")
        await browser.wait_for(f"{text_of('[data-channel=C0BOB0001]')}.includes('10 minutes')")
        await browser.evaluate("document.getElementById('command-channel').value = 'C0ALICE01'")
        await browser.type_and_enter("#command-text", "/sip alice The van is at gate 3")
        await demo.phones["alice"].wait_for_messages(1)
        await browser.evaluate("document.querySelector('[data-phone=bob] .power').click()")
        await browser.wait_for(f"{text_of('[data-phone=bob] .presence')}.includes('off')")

        await browser.evaluate("showTab('home')")
        await browser.wait_for(f"{text_of('#home-view')}.includes('bob · offline') && "
                               f"{text_of('#home-view')}.includes('sent')", timeout=15)
        await shoot(browser, out / "demo-home.png")

        await browser.evaluate("showTab('channels')")
        await browser.evaluate("document.getElementById('shortcut-button').click()")
        await browser.evaluate("document.getElementById('shortcut-compose').click()")
        await browser.wait_for("!!document.querySelector('.bk-modal textarea')")
        await browser.evaluate("document.querySelector('.bk-modal textarea').focus()")
        await browser.send("Input.insertText", text="Can you bring the spare key?\nThanks!")
        await browser.evaluate("document.querySelector('.bk-select-input').focus()")
        await browser.wait_for("document.querySelectorAll('.bk-option').length === 2")
        await shoot(browser, out / "demo-modal.png")
    finally:
        await browser.stop()
        await demo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    problem = sandbox_problem(default_sandbox_dir()) or chromium_problem()
    if problem:
        print(f"screenshots: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(take(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
