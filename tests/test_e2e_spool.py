"""Asterisk's spool of recent texts (extensions.conf), against the real Asterisk: keys carry the
date, old hours are deleted once per hour whatever the traffic did meanwhile, and a text the
bridge delivered is never posted again, even after the store forgot it."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asterisk.harness import AsteriskSandbox
from conftest import own_pbx, start_bridge
from fake_slack import FakeSlack
from sip_ua import SipPhone
from slack_view import shown_texts

from bridge.asterisk.ami import spool_hour
from bridge.store.sqlite import Store

pytestmark = pytest.mark.asterisk

# hour, minute (none in the layout before minutes), time, sha1
KEY = re.compile(r"^/slack-bridge-spool/(\d{10})/(?:(\d{2})/)?(\d{10}\.\d{6})-([0-9a-f]{40})\s*:",
                 re.MULTILINE)


@pytest.fixture
async def pbx() -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    async with own_pbx("alice") as pbx:
        yield pbx


async def spool(asterisk: AsteriskSandbox) -> str:
    return await asterisk.cli("database show slack-bridge-spool")


async def state(asterisk: AsteriskSandbox, key: str) -> str:
    answer = await asterisk.cli(f"database get slack-bridge-spool-state {key}")
    return answer.split("Value:", 1)[1].strip() if "Value:" in answer else ""


async def put(asterisk: AsteriskSandbox, family: str, key: str, value: str) -> None:
    assert "Updated" in await asterisk.cli(f"database put {family} {key} {value}")


async def wait_shown(slack: FakeSlack, n: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(shown_texts(slack.posts)) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # anything extra (a repost) would show up now
    return shown_texts(slack.posts)


async def test_spool_keys_carry_the_hour_and_date_and_the_time_of_the_text(
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    began = time.time()
    for i in range(3):
        assert await phones["alice"].send_message(f"kept {i}") == 202
    await asyncio.sleep(0.3)
    keys = KEY.findall(await spool(asterisk))
    assert len(keys) == 3, await spool(asterisk)
    for hour, minute, at, _sha in keys:
        assert began - 1 <= float(at) <= time.time() + 1
        assert hour == spool_hour(float(at))
        assert minute == f"{time.gmtime(float(at)).tm_min:02d}"
    assert [float(at) for _, _, at, _ in keys] == sorted(float(at) for _, _, at, _ in keys)
    assert await state(asterisk, "hour") == keys[0][0]
    assert await state(asterisk, "hours") == keys[0][0]
    # The hour's minutes that hold texts, each once (the bridge reads only those it lacks).
    hour = keys[0][0]
    minutes = sorted({minute for key_hour, minute, _, _ in keys if key_hour == hour})
    assert await state(asterisk, f"minutes-{hour}") == "-".join(minutes)
    assert "WARNING" not in asterisk.log_text() and "ERROR" not in asterisk.log_text()


async def test_the_first_text_of_an_hour_deletes_every_hour_older_than_a_day(
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    now = time.time()
    # A spool as a quiet weekend leaves it: hours of days ago (never followed by a text two
    # hours before them, which is all the old expiry looked for), one of 23 hours ago, and
    # an entry of the previous layout (hour of day only).
    old = [spool_hour(now - days * 86400) for days in (3, 2)] + [spool_hour(now - 25 * 3600)]
    recent = spool_hour(now - 23 * 3600)
    for hour in [*old, recent]:
        await put(asterisk, "slack-bridge-spool", f"{hour}/{now - 99:.6f}-{'0' * 40}",
                  "1|0|||||0|")
    await put(asterisk, "slack-bridge-spool", f"07/{'1' * 40}", "1|0|||||0|")
    await put(asterisk, "slack-bridge-spool-state", "hours", "-".join([recent, *old]))
    await put(asterisk, "slack-bridge-spool-state", "hour", recent)
    for hour in [*old, recent]:
        await put(asterisk, "slack-bridge-spool-state", f"minutes-{hour}", "05")

    assert await phones["alice"].send_message("a new hour") == 202
    await asyncio.sleep(0.3)
    listing = await spool(asterisk)
    hours = sorted({hour for hour, _, _, _ in KEY.findall(listing)})
    assert hours == sorted([recent, spool_hour(time.time())]), listing
    assert "/slack-bridge-spool/07/" in listing  # not in the list: the bridge ignores it
    assert await state(asterisk, "hours") == f"{spool_hour(time.time())}-{recent}"
    # The deleted hours' lists of minutes went with them; the kept hour's stays.
    assert [await state(asterisk, f"minutes-{hour}") for hour in old] == ["", "", ""]
    assert await state(asterisk, f"minutes-{recent}") == "05"

    # The same hour again: nothing is deleted, nothing listed twice.
    assert await phones["alice"].send_message("same hour") == 202
    await asyncio.sleep(0.3)
    assert len(KEY.findall(await spool(asterisk))) == 3
    assert await state(asterisk, "hours") == f"{spool_hour(time.time())}-{recent}"


async def test_before_the_hours_list_exists_the_old_layout_is_cleared(
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    await put(asterisk, "slack-bridge-spool", f"07/{'1' * 40}", "1|0|||||0|")
    await put(asterisk, "slack-bridge-spool", f"23/{'2' * 40}", "1|0|||||0|")
    assert await phones["alice"].send_message("first with the new dialplan") == 202
    await asyncio.sleep(0.3)
    listing = await spool(asterisk)
    assert len(KEY.findall(listing)) == 1 and "/07/" not in listing and "/23/" not in listing


async def test_a_delivered_text_is_never_posted_again_even_after_the_store_forgot_it(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    asterisk, phones = pbx
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        for i in range(5):
            assert await phones["alice"].send_message(f"delivered {i}") == 202
        assert await wait_shown(slack, 5) == [f"delivered {i}" for i in range(5)]
    finally:
        assert await bridge.stop() == 0, bridge.log
    for i in range(3):
        assert await phones["alice"].send_message(f"while away {i}") == 202
    # The store forgets every delivered text (its prune, days later).
    store = await Store.open(tmp_path / "bridge-store.sqlite3")
    assert (await store.prune(time.time() + 60)).texts == 5
    await store.close()
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        shown = await wait_shown(slack, 8)
        assert shown == [f"delivered {i}" for i in range(5)] + [
            f"while away {i}" for i in range(3)]
        assert "3 texts from Asterisk's spool handed over, 5 older ones" in bridge.log
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_an_hour_begun_by_the_dialplan_before_minutes_is_read_whole(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    """Upgraded in the middle of an hour, the dialplan spools that hour's texts in two layouts
    (before: right under the hour; after: under its minute) and marks the hour's list of
    minutes "x": a bridge that was away then gets the texts of both, in time order."""
    asterisk, phones = pbx
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        assert await phones["alice"].send_message("delivered") == 202
        assert await wait_shown(slack, 1) == ["delivered"]
    finally:
        assert await bridge.stop() == 0, bridge.log
    assert await phones["alice"].send_message("while away, new layout") == 202
    await asyncio.sleep(0.3)
    listing = await spool(asterisk)
    (_, _, delivered_at, _), (hour, minute, at, sha) = sorted(
        KEY.findall(listing), key=lambda key: float(key[2]))
    match = re.search(rf"/{at}-{sha}\s*:\s*(\S+)", listing)
    assert match, listing
    # A text the older dialplan spooled in between (before the upgrade), with its own id.
    older_at = f"{(float(delivered_at) + float(at)) / 2:.6f}"
    fields = match.group(1).split("|")  # 2|time|from|to|toexten|id|length|body|endpoint
    body = "while away, old layout"
    fields[1] = older_at
    fields[5] = base64.b64encode(b"older-layout-call 1").decode()
    fields[6] = str(len(body))
    fields[7] = base64.b64encode(body.encode()).decode()
    await put(asterisk, "slack-bridge-spool", f"{hour}/{older_at}-{'3' * 40}", "|".join(fields))
    if spool_hour(float(delivered_at)) == hour:  # (else the hour began with the new text)
        await put(asterisk, "slack-bridge-spool-state", f"minutes-{hour}", f"x-{minute}")
    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        shown = await wait_shown(slack, 3)
        assert shown == ["delivered", "while away, old layout", "while away, new layout"]
    finally:
        assert await bridge.stop() == 0, bridge.log


async def test_the_dialplan_marks_an_hour_an_older_dialplan_began(
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    """Reloaded mid-hour over the dialplan before minutes (which left state/hour at this
    hour and no list of minutes), the first text marks the hour's list "x"."""
    asterisk, phones = pbx
    hour = spool_hour(time.time())
    await put(asterisk, "slack-bridge-spool-state", "hour", hour)
    await put(asterisk, "slack-bridge-spool-state", "hours", hour)
    assert await phones["alice"].send_message("first after the reload") == 202
    await asyncio.sleep(0.3)
    [(key_hour, minute, _, _)] = KEY.findall(await spool(asterisk))
    if key_hour == hour:  # (else a new hour began meanwhile: an ordinary list)
        assert await state(asterisk, f"minutes-{hour}") == f"x-{minute}"
    assert "WARNING" not in asterisk.log_text() and "ERROR" not in asterisk.log_text()


async def test_a_new_store_does_not_read_the_spool_from_before_it_was_created(
        tmp_path: Path, slack: FakeSlack,
        pbx: tuple[AsteriskSandbox, dict[str, SipPhone]]) -> None:
    """A new store relays nothing spooled before it was created, so its login reads the
    spool from that minute on: a day of texts (100,000 on a busy PBX) is not streamed under
    AstDB's lock to be thrown away. The earlier minutes are named in the warning, unread."""
    asterisk, phones = pbx
    assert await phones["alice"].send_message("template") == 202
    await asyncio.sleep(0.3)
    listing = await spool(asterisk)
    [(hour, minute, at, sha)] = KEY.findall(listing)
    match = re.search(rf"/{at}-{sha}\s*:\s*(\S+)", listing)
    assert match, listing
    fields = match.group(1).split("|")  # 2|time|from|to|toexten|id|length|body|endpoint
    # Texts of two minutes before, spooled as the dialplan spools them (and listed).
    earlier = float(at) - 120
    earlier_hour, earlier_minute = spool_hour(earlier), f"{time.gmtime(earlier).tm_min:02d}"
    for i in range(30):
        body = f"before the store {i}"
        stamp = f"{earlier + i / 1000:.6f}"
        fields[1], fields[6] = stamp, str(len(body))
        fields[5] = base64.b64encode(f"before-{i}".encode()).decode()
        fields[7] = base64.b64encode(body.encode()).decode()
        await put(asterisk, "slack-bridge-spool",
                  f"{earlier_hour}/{earlier_minute}/{stamp}-{i:040d}", "|".join(fields))
    if earlier_hour == hour:
        await put(asterisk, "slack-bridge-spool-state", f"minutes-{hour}",
                  f"{earlier_minute}-{minute}")
    else:
        await put(asterisk, "slack-bridge-spool-state", "hours", f"{earlier_hour}-{hour}")
        await put(asterisk, "slack-bridge-spool-state", f"minutes-{earlier_hour}",
                  earlier_minute)
    assert "removed" in (await asterisk.cli(
        f"database del slack-bridge-spool {hour}/{minute}/{at}-{sha}")).lower()

    bridge = await start_bridge(tmp_path, slack, asterisk.ami_port)
    try:
        line = await bridge.wait_for_log("texts in Asterisk's spool are older than this store")
        assert "NOT relayed: those of 1 earlier" in line, line  # none of them read
        assert "--replay-spool" in line
        assert "0 texts from Asterisk's spool handed over" in bridge.log
        assert await phones["alice"].send_message("after the store") == 202
        assert await wait_shown(slack, 1) == ["after the store"]
    finally:
        assert await bridge.stop() == 0, bridge.log
