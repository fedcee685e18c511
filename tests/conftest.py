"""Shared fixtures: one real Asterisk with three phones, one fake Slack, one running bridge.

Session-scoped (one event loop for the whole run, see pyproject): the Asterisk sandbox
takes a few seconds to start, so most end-to-end tests share it. Tests that stop Asterisk
or the bridge make their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asterisk.harness import AsteriskSandbox, SipPeer, free_port, require_sandbox
from bridge_runner import BridgeConfig, BridgeProcess, EndpointSpec, write_config
from cdp_browser import Chromium, require_chromium
from fake_slack import FakeSlack
from postgres_cluster import PostgresCluster, require_postgres
from sip_ua import SipPhone

from bridge.demo.runner import Demo

ALICE_CHANNEL = "C0ALICE00"
BOB_CHANNEL = "C0BOB0000"
DEFAULT_CHANNEL = "C0DEFAULT0"
AMI_SECRET = "test-ami-secret-4f9b"
SIGNING_SECRET = "test-signing-secret-77c1"
BOT_TOKEN = "xoxb-test-token-1234"
APP_TOKEN = "xapp-test-token-5678"

PHONE_NAMES = ("alice", "bob", "carol")  # carol exists in Asterisk but not in the directory


def directory_endpoints() -> list[EndpointSpec]:
    return [
        EndpointSpec("alice", "pjsip:alice", ALICE_CHANNEL),
        EndpointSpec("bob", "pjsip:bob", BOB_CHANNEL, aliases=("front-desk",)),
        # in the directory, but Asterisk has no such endpoint: MessageSend is refused
        EndpointSpec("ghost", "pjsip:ghost", BOB_CHANNEL),
    ]


@pytest.fixture(scope="session")
def sip_port() -> int:
    return free_port("udp")


@pytest.fixture(scope="session")
async def phones(sip_port: int) -> AsyncIterator[dict[str, SipPhone]]:
    started = {name: SipPhone(name, asterisk_port=sip_port) for name in PHONE_NAMES}
    for phone in started.values():
        await phone.start()
    yield started
    for phone in started.values():
        await phone.stop()


@pytest.fixture(scope="session")
async def asterisk(phones: dict[str, SipPhone], sip_port: int) -> AsyncIterator[AsteriskSandbox]:
    require_sandbox()
    sandbox = AsteriskSandbox(peers=[SipPeer(p.name, p.port) for p in phones.values()],
                              sip_port=sip_port, ami_secret=AMI_SECRET)
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


@contextlib.asynccontextmanager
async def own_pbx(*names: str, phone_options: dict[str, dict[str, str]] | None = None,
                  **sandbox_kwargs: Any
                  ) -> AsyncIterator[tuple[AsteriskSandbox, dict[str, SipPhone]]]:
    """An Asterisk of the calling test's own (it stops it, floods it, or must not share it),
    with one started phone per name; `sandbox_kwargs` go to AsteriskSandbox (default
    ami_secret: AMI_SECRET). `phone_options[name]` sets that phone's `host`, `password`,
    `identify_by` and `message_context` (see SipPeer). Skips (fails in CI) without the
    sandbox."""
    require_sandbox()
    sip_port = free_port("udp")
    sandbox_kwargs.setdefault("ami_secret", AMI_SECRET)
    options = phone_options or {}
    async with contextlib.AsyncExitStack() as stack:
        phones = {}
        for name in names:
            mine = options.get(name, {})
            phones[name] = await stack.enter_async_context(SipPhone(
                name, asterisk_port=sip_port, host=mine.get("host", "127.0.0.1"),
                password=mine.get("password")))
        # Started phones know their ports, which Asterisk's contacts for them name.
        sandbox = AsteriskSandbox(peers=[SipPeer(n, p.port, **options.get(n, {}))
                                         for n, p in phones.items()],
                                  sip_port=sip_port, **sandbox_kwargs)
        yield await stack.enter_async_context(sandbox), phones


@pytest.fixture(scope="session")
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(bot_token=BOT_TOKEN, app_token=APP_TOKEN, signing_secret=SIGNING_SECRET)
    await fake.start()
    yield fake
    await fake.stop()


def bridge_env(slack: FakeSlack, *, socket_mode: bool = False) -> dict[str, str]:
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": slack.api_url,
           "AMI_SECRET": AMI_SECRET}
    if socket_mode:
        env["SLACK_APP_TOKEN"] = APP_TOKEN
    else:
        env["SLACK_SIGNING_SECRET"] = SIGNING_SECRET
    return env


async def start_bridge(tmp: Path, slack: FakeSlack, ami_port: int, *,
                       socket_mode: bool = False, wait_for_ami: bool = True,
                       **config: Any) -> BridgeProcess:
    """Write a config into `tmp` (reusing its store across restarts) and start the bridge."""
    config.setdefault("endpoints", directory_endpoints())
    path = write_config(tmp, BridgeConfig(ami_port=ami_port, default_channel=DEFAULT_CHANNEL,
                                          **config))
    process = BridgeProcess(path, bridge_env(slack, socket_mode=socket_mode), port=free_port())
    await process.start()
    if wait_for_ami:
        await process.wait_for_log("AMI: connected")
    return process


@pytest.fixture(scope="session")
async def bridge(tmp_path_factory: pytest.TempPathFactory, slack: FakeSlack,
                 asterisk: AsteriskSandbox) -> AsyncIterator[BridgeProcess]:
    process = await start_bridge(tmp_path_factory.mktemp("bridge"), slack, asterisk.ami_port)
    yield process
    code = await process.stop()
    assert code == 0, f"bridge exited {code} on SIGTERM:\n{process.log}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the run (skips locally, fails in CI, without
    PostgreSQL); each test takes a fresh database of it with `postgres.database()`."""
    require_postgres()
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _fresh_records(request: pytest.FixtureRequest) -> None:
    """Each test starts with empty inboxes on the phones and the fake Slack."""
    for name in ("phones", "slack"):
        if name in request.fixturenames:
            value = request.getfixturevalue(name)
            if isinstance(value, FakeSlack):
                value.reset()
            else:
                for phone in value.values():
                    phone.received.clear()


# -- `bridge demo` and a browser on its page (tests/test_demo.py, test_demo_slack_views.py) ----


@pytest.fixture(scope="module")
async def demo() -> AsyncIterator[Demo]:
    require_sandbox()
    running = Demo(port=0)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def page(demo: Demo) -> AsyncIterator[Chromium]:
    require_chromium()
    browser = Chromium()
    try:
        await browser.start()
        await browser.goto(demo.url)
        await browser.wait_for("document.querySelectorAll('[data-phone]').length === 2")
        yield browser
    finally:
        await browser.stop()
