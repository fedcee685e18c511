"""The demo stand-in's Slack surfaces beyond messages: modals, the App Home and interactivity.

`SlackViews` owns what Slack keeps about views for the one demo user: the trigger_ids it
handed out (each opens one view, within 3 s), the modal that is open (with the field errors
an app answered), and the Home view the app published. It checks views the way Slack does and
refuses with Slack's error names (`invalid_trigger_id`, `expired_trigger_id`,
`exchanged_trigger_id`, `invalid_arguments`, `not_found`), so the demo shows what a real
workspace would show. `*_payload` build the interactivity payloads Slack sends an app (a
global or message shortcut, a block_suggestion, a view_submission, a block_actions press);
`slack_standin.py` signs and posts them and reads the answers with `read_*_answer`.

Limits (api.slack.com/reference/surfaces/views, /block-kit): a view at most 100 blocks; a
modal's title, submit and close labels at most 24 characters; private_metadata and
callback_id at most 3,000 / 255 characters; a block_suggestion answer at most 100 options of
at most 75 characters (value at most 150), answered within 3 s, else the user sees no options.
Not modelled: views.push stacks (the bridge does not push), hash conflicts, several users.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.demo.slack_web_api import SlackRefusal

log = logging.getLogger(__name__)

TRIGGER_LIFETIME = 3.0
MAX_VIEW_BLOCKS = 100
MAX_VIEW_LABEL = 24  # title, submit, close
MAX_PRIVATE_METADATA = 3000
MAX_CALLBACK_ID = 255
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
REQUIRED = "Please complete this required field."  # what Slack shows under an empty input


def _label_ok(obj: Any) -> bool:
    return (isinstance(obj, dict) and obj.get("type") == "plain_text"
            and isinstance(obj.get("text"), str) and 0 < len(obj["text"]) <= MAX_VIEW_LABEL)


def check_view(view: Any, *, kind: str) -> dict[str, Any]:
    """The view as Slack stores it, or SlackRefusal("invalid_arguments") where Slack refuses it."""
    if isinstance(view, str):
        try:
            view = json.loads(view)
        except ValueError:
            raise SlackRefusal("invalid_arguments") from None
    if not isinstance(view, dict) or view.get("type") != kind:
        raise SlackRefusal("invalid_arguments")
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or len(blocks) > MAX_VIEW_BLOCKS \
            or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks):
        raise SlackRefusal("invalid_arguments")
    if kind == "modal":
        if not _label_ok(view.get("title")):
            raise SlackRefusal("invalid_arguments")
        if any(key in view and not _label_ok(view[key]) for key in ("submit", "close")):
            raise SlackRefusal("invalid_arguments")
        if any(b["type"] == "input" for b in blocks) and "submit" not in view:
            raise SlackRefusal("invalid_arguments")  # inputs need a submit button
    if len(str(view.get("private_metadata", ""))) > MAX_PRIVATE_METADATA \
            or len(str(view.get("callback_id", ""))) > MAX_CALLBACK_ID:
        raise SlackRefusal("invalid_arguments")
    block_ids = [b["block_id"] for b in blocks if b.get("block_id")]
    if len(block_ids) != len(set(block_ids)):
        raise SlackRefusal("invalid_arguments")
    return view


def check_options(answer: Any) -> list[dict[str, Any]] | None:
    """The options of a block_suggestion answer, or None where Slack would show none."""
    if not isinstance(answer, dict) or not isinstance(answer.get("options"), list):
        return None
    options: list[dict[str, Any]] = answer["options"]
    if len(options) > MAX_OPTIONS:
        return None
    for option in options:
        text = option.get("text") if isinstance(option, dict) else None
        if not isinstance(text, dict) or text.get("type") != "plain_text" \
                or not 0 < len(str(text.get("text", ""))) <= MAX_OPTION_TEXT \
                or not 0 < len(str(option.get("value", ""))) <= MAX_OPTION_VALUE:
            return None
    return options


@dataclass
class OpenModal:
    """The modal on the user's screen, as the page shows it."""

    view: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)  # block_id -> line under the field

    def to_json(self) -> dict[str, Any]:
        return {"view": self.view, "errors": self.errors}


class SlackViews:
    """Triggers, the open modal and the published Home of the demo's user."""

    def __init__(self, *, user_id: str, team_id: str, app_id: str) -> None:
        self.user_id = user_id
        self.team_id = team_id
        self.app_id = app_id
        self.modal: OpenModal | None = None
        self.homes: dict[str, dict[str, Any]] = {}  # user -> the view published last
        self.refusals: list[str] = []  # the views.* errors answered, in order (for the page)
        self._triggers: dict[str, float] = {}  # trigger_id -> monotonic time handed out
        self._used: set[str] = set()
        self._ids = 0

    def new_trigger(self) -> str:
        """A trigger_id as Slack puts in a user's action: opens one view, within 3 s."""
        trigger = f"{int(time.time())}.{secrets.token_hex(8)}"
        self._triggers[trigger] = time.monotonic()
        return trigger

    def _new_view_id(self) -> str:
        self._ids += 1
        return f"V0DEMO{self._ids:04d}"

    def _take_trigger(self, trigger: str) -> None:
        issued = self._triggers.get(trigger)
        if issued is None:
            raise SlackRefusal("invalid_trigger_id")
        if trigger in self._used:
            raise SlackRefusal("exchanged_trigger_id")
        if time.monotonic() - issued > TRIGGER_LIFETIME:
            raise SlackRefusal("expired_trigger_id")
        self._used.add(trigger)

    def refuse(self, method: str, error: str) -> None:
        self.refusals.append(f"{method}: {error}")
        log.warning("Slack stand-in: %s refused: %s", method, error)

    # ------------------------------------------------------------------ the Web API

    def views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        view = check_view(params.get("view"), kind="modal")
        self._take_trigger(str(params.get("trigger_id") or ""))
        stored = {**view, "id": self._new_view_id(), "state": {"values": {}}}
        self.modal = OpenModal(stored)
        return {"ok": True, "view": stored}

    def views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        view = check_view(params.get("view"), kind="modal")
        wanted = str(params.get("view_id") or "")
        if self.modal is None or not wanted or self.modal.view["id"] != wanted:
            raise SlackRefusal("not_found")
        stored = {**view, "id": wanted, "state": {"values": {}}}
        self.modal = OpenModal(stored)
        return {"ok": True, "view": stored}

    def views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        user = str(params.get("user_id") or "")
        view = check_view(params.get("view"), kind="home")
        if user != self.user_id:  # the demo has one user; Slack's documented error
            raise SlackRefusal("invalid_arguments")
        stored = {**view, "id": self.homes.get(user, {}).get("id") or self._new_view_id()}
        self.homes[user] = stored
        return {"ok": True, "view": stored}

    # ------------------------------------------------------------------ what Slack sends

    def _user(self, name: str) -> dict[str, Any]:
        return {"id": self.user_id, "username": name, "name": name, "team_id": self.team_id}

    def _base(self, kind: str, user_name: str) -> dict[str, Any]:
        return {"type": kind, "token": "demo-verification-token", "api_app_id": self.app_id,
                "team": {"id": self.team_id, "domain": "demo"},
                "user": self._user(user_name), "is_enterprise_install": False,
                "enterprise": None}

    def shortcut_payload(self, callback_id: str, user_name: str) -> dict[str, Any]:
        """The global shortcut chosen from the shortcuts menu."""
        return {**self._base("shortcut", user_name), "callback_id": callback_id,
                "trigger_id": self.new_trigger(), "action_ts": f"{time.time():.6f}"}

    def message_shortcut_payload(self, callback_id: str, user_name: str, *,
                                 channel: dict[str, str], message: dict[str, Any],
                                 response_url: str) -> dict[str, Any]:
        """A message shortcut chosen from a message's "More actions" menu."""
        return {**self._base("message_action", user_name), "callback_id": callback_id,
                "trigger_id": self.new_trigger(), "action_ts": f"{time.time():.6f}",
                "message_ts": message["ts"], "channel": channel, "message": message,
                "response_url": response_url}

    def _view_with_state(self, values: dict[str, Any]) -> dict[str, Any]:
        assert self.modal is not None
        return {**self.modal.view, "state": {"values": values}, "team_id": self.team_id,
                "app_id": self.app_id, "bot_id": "", "root_view_id": self.modal.view["id"],
                "previous_view_id": None, "hash": secrets.token_hex(6)}

    def suggestion_payload(self, *, block_id: str, action_id: str, value: str,
                           user_name: str) -> dict[str, Any]:
        """Type-ahead in an external_select of the open modal."""
        assert self.modal is not None
        return {**self._base("block_suggestion", user_name), "block_id": block_id,
                "action_id": action_id, "value": value,
                "container": {"type": "view", "view_id": self.modal.view["id"]},
                "view": self._view_with_state({})}

    def missing_inputs(self, values: dict[str, Any]) -> dict[str, str]:
        """Required inputs left empty: Slack itself says so, without asking the app."""
        assert self.modal is not None
        errors: dict[str, str] = {}
        for block in self.modal.view.get("blocks", []):
            if block.get("type") != "input" or block.get("optional"):
                continue
            element = block.get("element") or {}
            state = (values.get(block.get("block_id", "")) or {}).get(
                element.get("action_id", "")) or {}
            if not (state.get("value") or state.get("selected_option")):
                errors[str(block.get("block_id", ""))] = REQUIRED
        return errors

    def submission_payload(self, values: dict[str, Any], user_name: str) -> dict[str, Any]:
        """Send pressed in the open modal, with what the user entered."""
        return {**self._base("view_submission", user_name), "trigger_id": self.new_trigger(),
                "view": self._view_with_state(values), "response_urls": []}

    def read_submission_answer(self, status: int, answer: str) -> dict[str, Any]:
        """What the modal does with the app's answer to a view_submission (shown to the user)."""
        if self.modal is None:  # closed (Cancel) while the app was answering
            return {"ok": True, "closed": True}
        if status != 200:
            self.modal.errors = {}
            return {"ok": False, "error": f"http_{status}",
                    "shown": "We had some trouble connecting. Try again?"}
        try:
            body = json.loads(answer) if answer.strip() else {}
        except ValueError:
            body = {}
        action = body.get("response_action") if isinstance(body, dict) else None
        if action == "errors" and isinstance(body.get("errors"), dict):
            known = {b.get("block_id") for b in self.modal.view.get("blocks", [])}
            errors = {str(k): str(v) for k, v in body["errors"].items()}
            if not set(errors) <= known:  # Slack refuses errors for blocks it does not have
                return {"ok": False, "error": "invalid_errors_block_id",
                        "shown": "We had some trouble connecting. Try again?"}
            self.modal.errors = errors
            return {"ok": True, "closed": False, "errors": errors}
        if action == "update" and isinstance(body.get("view"), dict):
            try:
                view = check_view(body["view"], kind="modal")
            except SlackRefusal as refusal:
                return {"ok": False, "error": refusal.error}
            self.modal = OpenModal({**view, "id": self.modal.view["id"],
                                    "state": {"values": {}}})
            return {"ok": True, "closed": False}
        self.modal = None  # an empty 200, "clear" (and, for one level, "push" is not modelled)
        return {"ok": True, "closed": True}

    def actions_payload(self, *, action: dict[str, Any], user_name: str,
                        container: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """A button pressed (in a message, the Home or a modal)."""
        pressed = {**action, "action_ts": f"{time.time():.6f}"}
        return {**self._base("block_actions", user_name), "trigger_id": self.new_trigger(),
                "container": container, "actions": [pressed], **extra}

    def close_modal(self) -> None:
        self.modal = None
