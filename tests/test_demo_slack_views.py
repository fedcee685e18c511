"""`bridge demo`'s Slack surfaces: the compose modal, its picker, the Home tab, the message
shortcut and the Retry button, in a real headless Chromium on the demo's page, with the real
bridge, a real Asterisk and the demo's SIP phones; plus the stand-in's Slack limits on views
(no Asterisk needed), checked through its Web API as the bridge would meet them."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cdp_browser import Chromium, text_of
from slack_sdk.signature import SignatureVerifier

from bridge.demo import slack_views
from bridge.demo.runner import MAX_PARTS, Demo
from bridge.demo.slack_standin import USER_ID, SlackStandIn
from bridge.demo.slack_views import check_options
from bridge.sandbox.launcher import free_port

ALICE_CHANNEL = "C0ALICE01"  # the demo's channels (bridge/demo/runner.py)
BOB_CHANNEL = "C0BOB0001"


@pytest.fixture
async def fresh(demo: Demo, page: Chromium) -> AsyncIterator[Chromium]:
    """The page on its Channels tab with no modal open, both phones on; the same after."""
    for name in demo.phones:
        if not demo.phone_on[name]:
            assert await demo.set_phone_power(name, on=True)
    await page.evaluate("showTab('channels')")
    yield page
    if demo.slack.views.modal is not None:
        demo.slack.cancel_modal()


def click(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)}).click()"


async def type_into(page: Chromium, selector: str, text: str) -> None:
    """Focus a field and type `text` as keyboard input (no Enter)."""
    focused = await page.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
        " if (!e) return false; e.focus(); return document.activeElement === e; })()")
    assert focused, f"no field {selector!r}"
    await page.send("Input.insertText", text=text)


async def open_compose_from_shortcuts(page: Chromium) -> None:
    await page.evaluate(click("#shortcut-button"))
    await page.evaluate(click("#shortcut-compose"))
    await page.wait_for(f"{text_of('.bk-modal h3')} === 'Text a phone'")


async def pick(page: Chromium, typed: str, wanted: str) -> str:
    """Type in the modal's recipient picker, wait for the option `wanted`, pick it; its text."""
    await type_into(page, ".bk-select-input", typed)
    await page.wait_for(f"document.querySelector('.bk-options').dataset.query === "
                        f"{json.dumps(typed)}")
    option = (f"[...document.querySelectorAll('.bk-option')]"
              f".find(o => o.dataset.value === {json.dumps(wanted)})")
    shown = await page.wait_for(f"({option} || {{}}).innerText")
    await page.evaluate(f"{option}.dispatchEvent(new MouseEvent('mousedown', {{bubbles: true}}))")
    return str(shown)


async def options_shown(page: Chromium) -> list[str]:
    return list(await page.evaluate(
        "[...document.querySelectorAll('.bk-option')].map(o => o.innerText)"))


# ---------------------------------------------------------------------- the page, end to end


@pytest.mark.asterisk
async def test_a_text_sent_through_the_modal_reaches_the_phone_exactly(
        demo: Demo, fresh: Chromium) -> None:
    page = fresh
    before = len(demo.phones["alice"].received)
    await open_compose_from_shortcuts(page)
    # Type-ahead: the stand-in asks the bridge (block_suggestion) and shows its options.
    await type_into(page, ".bk-select-input", "")
    assert set(await page.wait_for("document.querySelector('.bk-options').dataset.query === ''"
                                   " && [...document.querySelectorAll('.bk-option')]"
                                   ".map(o => o.innerText)")) == {"alice · online",
                                                                  "bob · online"}
    shown = await pick(page, "al", "alice")
    assert shown == "alice · online"  # registered with Asterisk: the bridge saw it come online
    assert await options_shown(page) == ["alice · online"]  # "al" matches alice only
    text = "Running late 🚆\nback at 3 & <not markup>"
    await type_into(page, ".bk-input[data-block-id=text] textarea", text)
    await page.evaluate(click("[data-role=submit]"))

    await page.wait_for("document.querySelector('.bk-modal') === null")
    received = await demo.phones["alice"].wait_for_messages(before + 1)
    assert received[-1].body == text
    assert len(received) == before + 1
    await page.wait_for(f"[...document.querySelectorAll('[data-phone=alice] .bubble.in')]"
                        f".some(b => b.innerText.startsWith({json.dumps(text)}))")
    # The echo of what was sent shows in alice's channel, by whom.
    await page.wait_for(f"{text_of(f'[data-channel={ALICE_CHANNEL}]')}"
                        f".includes('back at 3 & <not markup>')")
    assert demo.phones["bob"].received == [] or all(
        m.body != text for m in demo.phones["bob"].received)
    assert page.console == []


@pytest.mark.asterisk
async def test_a_refused_text_stays_in_the_modal_with_the_reason_under_the_field(
        demo: Demo, fresh: Chromium) -> None:
    page = fresh
    # `/sip` with no text opens the compose window (the command's trigger_id).
    await page.evaluate(f"document.getElementById('command-channel').value = '{BOB_CHANNEL}'")
    await page.type_and_enter("#command-text", "/sip")
    await page.wait_for(f"{text_of('.bk-modal h3')} === 'Text a phone'")

    # Send with nothing picked: Slack itself says the field is required.
    await page.evaluate(click("[data-role=submit]"))
    required = await page.wait_for(text_of(".bk-input[data-block-id=recipient] .bk-error"))
    assert required == "Please complete this required field."
    assert await page.evaluate(text_of(".bk-input[data-block-id=text] .bk-error")) == required

    before = len(demo.phones["bob"].received)
    await pick(page, "bo", "bob")
    too_long = "x" * (756 * MAX_PARTS + 1)  # one more phone message than the demo allows
    await page.evaluate("document.querySelector('.bk-input[data-block-id=text] textarea')"
                        f".value = {json.dumps(too_long)}")
    await page.evaluate(click("[data-role=submit]"))
    error = await page.wait_for(f"{text_of('.bk-input[data-block-id=text] .bk-error')}"
                                ".includes('too long') && "
                                f"{text_of('.bk-input[data-block-id=text] .bk-error')}")
    assert "the text is too long" in error and f"the limit is {MAX_PARTS}" in error
    # The modal is still open, with what was typed; the recipient's error is gone.
    assert await page.evaluate("document.querySelector('.bk-modal textarea').value.length") \
        == len(too_long)
    assert await page.evaluate(text_of(".bk-input[data-block-id=recipient] .bk-error")) == ""
    assert demo.slack.views.modal is not None
    assert len(demo.phones["bob"].received) == before

    await page.evaluate(click("[data-role=cancel]"))
    await page.wait_for("document.querySelector('.bk-modal') === null")
    assert len(demo.phones["bob"].received) == before


@pytest.mark.asterisk
async def test_home_tab_shows_the_directory_with_presence_and_opens_the_modal(
        demo: Demo, fresh: Chromium) -> None:
    page = fresh
    await page.evaluate(click(".tab[data-tab=home]"))
    shown = text_of("#home-view")
    home = await page.wait_for(f"{shown}.includes('alice · online') && "
                               f"{shown}.includes('bob · online') && {shown}", timeout=15)
    assert "Phones you can text" in home
    assert "🟢 alice · online · texts in #alice-texts" in home
    assert "🟢 bob · online · texts in #bob-texts" in home
    assert "PBX (Asterisk): 🟢 connected" in home

    # A phone switched off on the page goes offline in the Home (republished by the bridge).
    await page.evaluate(click("[data-phone=bob] .power"))
    await page.wait_for(f"{text_of('#home-view')}.includes('bob · offline')", timeout=15)
    assert "🟢 alice · online" in await page.evaluate(text_of("#home-view"))

    # Its "Text a phone" button opens the compose window (block_actions with a trigger_id).
    await page.evaluate(click("#home-view [data-action-id=home_compose]"))
    await page.wait_for(f"{text_of('.bk-modal h3')} === 'Text a phone'")
    assert await pick(page, "bo", "bob") == "bob · offline"
    assert await options_shown(page) == ["bob · offline"]


@pytest.mark.asterisk
async def test_message_shortcut_opens_the_modal_prefilled_with_that_message(
        demo: Demo, fresh: Chromium) -> None:
    page = fresh
    await page.type_and_enter("[data-phone=bob] input", "Gate code is 4711 & ring twice")
    card = f"[data-channel={BOB_CHANNEL}]"
    await page.wait_for(f"{text_of(card)}.includes('Gate code is 4711')")
    await page.evaluate(f"[...document.querySelectorAll('{card} .feed > .msg')]"
                        ".filter(m => m.innerText.includes('Gate code is 4711')).pop()"
                        ".querySelector('.shortcut-link').click()")
    await page.wait_for(f"{text_of('.bk-modal h3')} === 'Text a phone'")
    prefilled = await page.evaluate("document.querySelector('.bk-modal textarea').value")
    # The post's text as Slack hands it to the shortcut (the bridge's fallback line: who, then
    # the text), unescaped as a phone would show it.
    assert prefilled == "bob: Gate code is 4711 & ring twice"

    before = len(demo.phones["alice"].received)
    await pick(page, "alice", "alice")
    await page.evaluate(click("[data-role=submit]"))
    await page.wait_for("document.querySelector('.bk-modal') === null")
    received = await demo.phones["alice"].wait_for_messages(before + 1)
    assert received[-1].body == prefilled


@pytest.mark.asterisk
async def test_retry_on_a_failed_text_sends_it_once_the_phone_is_back(
        demo: Demo, fresh: Chromium) -> None:
    page = fresh
    await page.evaluate(click("[data-phone=alice] .power"))  # unregister: offline
    await page.wait_for(f"{text_of('[data-phone=alice] .presence')}.includes('off')")
    before = len(demo.phones["alice"].received)
    await open_compose_from_shortcuts(page)
    assert await pick(page, "alice", "alice") == "alice · offline"
    text = "Are you there? (retried)"
    await type_into(page, ".bk-input[data-block-id=text] textarea", text)
    await page.evaluate(click("[data-role=submit]"))
    await page.wait_for("document.querySelector('.bk-modal') === null")

    # Asterisk refuses a text to an unregistered phone: the notice in alice's channel has Retry.
    card = f"[data-channel={ALICE_CHANNEL}]"
    retry = f"document.querySelector('{card} [data-action-id=retry_text]')"
    await page.wait_for(f"!!{retry}", timeout=20)
    assert "not registered" in await page.evaluate(
        f"{retry}.closest('.msg').innerText")
    assert len(demo.phones["alice"].received) == before

    await page.evaluate(click("[data-phone=alice] .power"))  # back on
    await page.wait_for(f"{text_of('[data-phone=alice] .presence')}.includes('registered')")
    await page.evaluate(f"{retry}.click()")
    received = await demo.phones["alice"].wait_for_messages(before + 1, timeout=20)
    assert received[-1].body == text
    await page.wait_for(f"{text_of(card)}.includes('Retrying the text to alice')")
    # A second press sends nothing more, and says so.
    await page.evaluate(f"{retry}.click()")
    await page.wait_for(f"{text_of(card)}.includes('already retried') || "
                        f"{text_of(card)}.includes('did not fail')")
    assert len(demo.phones["alice"].received) == before + 1


# ---------------------------------------------------------------------- the stand-in's limits


@pytest.fixture
async def standin() -> AsyncIterator[tuple[SlackStandIn, str]]:
    slack = SlackStandIn(bot_token="xoxb-test", signing_secret="s3cret")
    app = web.Application()
    app.add_routes(slack.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port("tcp")
    await web.TCPSite(runner, "127.0.0.1", port).start()
    slack.base_url = f"http://127.0.0.1:{port}"
    yield slack, slack.api_url
    await runner.cleanup()


async def call(api: str, method: str, **params: Any) -> dict[str, Any]:
    """A Web API call as slack_sdk makes it (JSON body, bearer token)."""
    async with aiohttp.ClientSession() as session, session.post(
            api + method, json=params, headers={"Authorization": "Bearer xoxb-test"}) as reply:
        answer: dict[str, Any] = await reply.json()
        return answer


def modal(title: str = "Text a phone", blocks: int = 1) -> dict[str, Any]:
    return {"type": "modal", "title": {"type": "plain_text", "text": title},
            "submit": {"type": "plain_text", "text": "Send"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"line {i}"}}
                       for i in range(blocks)]}


async def test_a_trigger_opens_one_modal_within_3_seconds(
        standin: tuple[SlackStandIn, str], monkeypatch: pytest.MonkeyPatch) -> None:
    slack, api = standin
    trigger = slack.views.new_trigger()
    opened = await call(api, "views.open", trigger_id=trigger, view=modal())
    assert opened["ok"] and slack.views_state()["modal"]["view"]["id"] == opened["view"]["id"]
    again = await call(api, "views.open", trigger_id=trigger, view=modal("Another"))
    assert again == {"ok": False, "error": "exchanged_trigger_id"}
    assert slack.views_state()["modal"]["view"]["title"]["text"] == "Text a phone"

    late = slack.views.new_trigger()
    now = slack_views.time.monotonic()
    monkeypatch.setattr(slack_views.time, "monotonic", lambda: now + 3.5)
    assert await call(api, "views.open", trigger_id=late, view=modal("Late")) == {
        "ok": False, "error": "expired_trigger_id"}
    assert await call(api, "views.open", trigger_id="made.up", view=modal()) == {
        "ok": False, "error": "invalid_trigger_id"}
    assert slack.views_state()["modal"]["view"]["title"]["text"] == "Text a phone"
    # The page says what Slack refused, the latest last.
    assert slack.views_state()["refusals"][-1] == "views.open: invalid_trigger_id"


@pytest.mark.parametrize("view", [modal(blocks=101), modal(title="Text a phone on the PBX!!"),
                                  {**modal(), "type": "home"}])
async def test_a_modal_slack_would_refuse_is_not_opened(
        standin: tuple[SlackStandIn, str], view: dict[str, Any]) -> None:
    slack, api = standin
    answer = await call(api, "views.open", trigger_id=slack.views.new_trigger(), view=view)
    assert answer == {"ok": False, "error": "invalid_arguments"}
    assert slack.views_state()["modal"] is None
    # A modal of exactly 100 blocks and a 24-character title is fine.
    assert len("Text a phone on the PBX!") == 24
    fine = await call(api, "views.open", trigger_id=slack.views.new_trigger(),
                      view=modal(title="Text a phone on the PBX!", blocks=100))
    assert fine["ok"]


async def test_home_views_over_100_blocks_are_refused_and_the_last_good_one_stays(
        standin: tuple[SlackStandIn, str]) -> None:
    slack, api = standin
    home = {"type": "home", "blocks": modal(blocks=100)["blocks"]}
    assert (await call(api, "views.publish", user_id=USER_ID, view=home))["ok"]
    too_big = {"type": "home", "blocks": modal(blocks=101)["blocks"]}
    assert await call(api, "views.publish", user_id=USER_ID, view=too_big) == {
        "ok": False, "error": "invalid_arguments"}
    assert len(slack.views_state()["home"]["blocks"]) == 100
    assert await call(api, "views.publish", user_id="U0SOMEONE", view=home) == {
        "ok": False, "error": "invalid_arguments"}


async def test_views_update_replaces_the_open_modal_only(
        standin: tuple[SlackStandIn, str]) -> None:
    slack, api = standin
    opened = await call(api, "views.open", trigger_id=slack.views.new_trigger(), view=modal())
    assert await call(api, "views.update", view_id="V0NOPE", view=modal("Other")) == {
        "ok": False, "error": "not_found"}
    updated = await call(api, "views.update", view_id=opened["view"]["id"],
                         view=modal("Sent"))
    assert updated["ok"] and slack.views_state()["modal"]["view"]["title"]["text"] == "Sent"


def test_option_answers_slack_would_not_show() -> None:
    def option(text: str, value: str = "v") -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": text}, "value": value}

    assert check_options({"options": [option("alice · online", "alice")]}) is not None
    assert check_options({"options": [option("x" * 75)] * 100}) is not None
    assert check_options({"options": [option("x")] * 101}) is None
    assert check_options({"options": [option("x" * 76)]}) is None
    assert check_options({"options": [option("x", "v" * 151)]}) is None
    assert check_options({"options": [{"text": {"type": "mrkdwn", "text": "*x*"},
                                       "value": "x"}]}) is None


@pytest.fixture
async def app_behind(standin: tuple[SlackStandIn, str]) -> AsyncIterator[
        tuple[SlackStandIn, list[dict[str, Any]], dict[str, Any]]]:
    """A stand-in app at the stand-in's Request URL: it checks each request's signature as
    bolt does, records the interactivity payloads and answers what `answers` holds per type."""
    slack, _ = standin
    verifier = SignatureVerifier("s3cret")
    seen: list[dict[str, Any]] = []
    answers: dict[str, Any] = {}

    async def events(request: web.Request) -> web.Response:
        body = await request.text()
        if not verifier.is_valid(body, request.headers.get("X-Slack-Request-Timestamp", ""),
                                 request.headers.get("X-Slack-Signature", "")):
            return web.Response(status=401)
        assert request.content_type == "application/x-www-form-urlencoded"
        [raw] = urllib.parse.parse_qs(body)["payload"]
        payload = json.loads(raw)
        seen.append(payload)
        answer = answers.get(payload["type"], "")
        return web.Response(text=answer if isinstance(answer, str) else json.dumps(answer),
                            content_type="application/json")

    app = web.Application()
    app.add_routes([web.post("/slack/events", events)])
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port("tcp")
    await web.TCPSite(runner, "127.0.0.1", port).start()
    slack.events_url = f"http://127.0.0.1:{port}/slack/events"
    yield slack, seen, answers
    await runner.cleanup()


def compose_modal() -> dict[str, Any]:
    return {"type": "modal", "callback_id": "compose_text",
            "title": {"type": "plain_text", "text": "Text a phone"},
            "submit": {"type": "plain_text", "text": "Send"},
            "blocks": [{"type": "input", "block_id": "recipient",
                        "label": {"type": "plain_text", "text": "To"},
                        "element": {"type": "external_select", "action_id": "recipient_pick"}},
                       {"type": "input", "block_id": "text",
                        "label": {"type": "plain_text", "text": "Text"},
                        "element": {"type": "plain_text_input", "action_id": "text_input"}}]}


async def test_interactivity_is_signed_and_the_answers_drive_the_modal(
        standin: tuple[SlackStandIn, str],
        app_behind: tuple[SlackStandIn, list[dict[str, Any]], dict[str, Any]]) -> None:
    slack, seen, answers = app_behind
    _, api = standin
    assert (await slack.open_shortcut())["ok"]  # signed: the app answered 200
    [shortcut] = seen
    assert shortcut["type"] == "shortcut" and shortcut["callback_id"] == "text_a_phone"
    opened = await call(api, "views.open", trigger_id=shortcut["trigger_id"],
                        view=compose_modal())
    assert opened["ok"]

    option = {"text": {"type": "plain_text", "text": "alice · online"}, "value": "alice"}
    answers["block_suggestion"] = {"options": [option]}
    shown = await slack.suggest(block_id="recipient", action_id="recipient_pick", value="al")
    assert shown["options"] == [option]
    assert seen[-1]["value"] == "al" and seen[-1]["container"]["view_id"] == opened["view"]["id"]
    answers["block_suggestion"] = {"options": [option] * 101}  # Slack would show none
    assert (await slack.suggest(block_id="recipient", action_id="recipient_pick",
                                value=""))["options"] == []
    assert slack.views_state()["refusals"][-1].startswith("block_suggestion:")

    values = {"recipient": {"recipient_pick": {"type": "external_select",
                                               "selected_option": option}},
              "text": {"text_input": {"type": "plain_text_input", "value": "hi"}}}
    answers["view_submission"] = {"response_action": "errors",
                                  "errors": {"text": "the text is too long"}}
    assert (await slack.submit(values))["closed"] is False
    assert slack.views_state()["modal"]["errors"] == {"text": "the text is too long"}
    assert seen[-1]["view"]["state"]["values"] == values
    answers["view_submission"] = ""  # an empty 200 closes it
    assert (await slack.submit(values))["closed"] is True
    assert slack.views_state()["modal"] is None

    # A wrong signing secret: the app answers 401, and nothing opens.
    slack.signing_secret = "not-the-secret"
    assert await slack.open_shortcut() == {"ok": False, "error": "http_401"}
    assert len(seen) == 5  # the forged one never reached the app
