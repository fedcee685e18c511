"""The shipped Slack app manifest declares what the bridge's handlers answer."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.slack.compose import COMPOSE_SHORTCUT, MESSAGE_SHORTCUT

MANIFEST = (Path(__file__).resolve().parent.parent / "config" / "slack-app-manifest.yml"
            ).read_text()


def test_shortcuts_carry_the_callback_ids_the_bridge_handles() -> None:
    ids = re.findall(r"^\s+callback_id: (\S+)$", MANIFEST, flags=re.MULTILINE)
    assert ids == [COMPOSE_SHORTCUT, MESSAGE_SHORTCUT]
    names = re.findall(r"^\s+- name: (.+)$", MANIFEST, flags=re.MULTILINE)
    assert all(len(name) <= 24 for name in names), names  # Slack's limit for a shortcut name


def test_interactivity_home_tab_and_options_go_to_the_events_url() -> None:
    assert re.search(r"interactivity:\n(\s+#.*\n)*\s+is_enabled: true\n"
                     r"\s+request_url: https://bridge.example.com/slack/events\n"
                     r"\s+message_menu_options_url: https://bridge.example.com/slack/events",
                     MANIFEST)
    assert "home_tab_enabled: true" in MANIFEST
    assert re.search(r"^\s+- app_home_opened", MANIFEST, flags=re.MULTILINE)
