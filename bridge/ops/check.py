"""`bridge check`: is this installation ready? A checklist with a fix for every failure.

After the config (checked like `bridge run` does, before this module is reached) it asks, at
the same time and each within a few seconds:
- each PBX's Asterisk (`probe_ami`; several `[[pbx]]`: every one, each item naming its PBX):
  can the bridge log in; may its AMI user send texts (ListCommands
  lists MessageSend: write=message); does it get system events (Asterisk sends FullyBooted
  right after the login only with read=system). Whether it gets the bridge's UserEvents
  (read=user) Asterisk does not reveal to a client, so that item is a reminder (!), not a pass.
  With `--send-test NAME` it also sends a test text to that directory endpoint.
- Slack (`probe_slack`): does the bot token work, which scopes it has (the bridge posts with
  chat.postMessage: chat:write; `/sip` needs commands; chat:write.public lets it post into
  public channels it was not invited to), is the bot in every mapped channel, and in Socket
  Mode, does the app-level token work.
- The store (`probe_store`): the SQLite file's schema, or for PostgreSQL: can the bridge
  connect (URL, password), which schema version the database holds (none yet, older: `bridge
  run` creates or upgrades it; newer: refused), and the rights the bridge needs (CREATE on the
  schema to create or upgrade the tables; SELECT, INSERT, UPDATE, DELETE on each of them).

Each item is ✓ (fine), ✗ (the bridge will not work: exit 1) or ! (worth a look, not fatal).
No secret is ever printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from bridge.asterisk.ami import AmiProbe, probe_ami
from bridge.core.errors import AmiActionFailed, AmiError, AmiLoginRefused, AmiTimeout
from bridge.settings.config import AmiSettings, Settings
from bridge.slack.probe import ChannelState, SlackProbe, probe_slack
from bridge.store import StoreProbe, probe_store, store_location

# Seconds each side (AMI, Slack) may take; they run at the same time, so the whole check
# stays well under 10 s even when both hosts are unreachable.
PROBE_SECONDS = 6.0

REQUIRED_SCOPES = ("commands", "chat:write")  # /sip; chat.postMessage
RECOMMENDED_SCOPES = ("chat:write.public",)  # post into public channels without an invite
# Scopes the conversation features use; without one the bridge works, with less.
CONVERSATION_SCOPES = (
    ("channels:history", ("replies in public channels' threads do not reach phones, and a "
                          "post Slack timed out on may be posted twice")),
    ("groups:history", "replies in private channels' threads do not reach phones"),
    ("reactions:write", "messages that sent a text show no ⏳ ✅ ❌ state"),
    ("users:read", "mentions in replies reach phones as user IDs, not names"),
)

TEST_TEXT = "Test text from the Slack bridge (bridge check). No need to answer."


class Mark(Enum):
    OK = "✓"
    FAIL = "✗"
    WARN = "!"


@dataclass(frozen=True)
class CheckItem:
    """One line of the checklist; `fix` says what to do when it is not OK."""

    mark: Mark
    title: str
    detail: str = ""
    fix: str = ""


async def run_checks(settings: Settings, *, send_test: str | None = None,
                     timeout: float = PROBE_SECONDS) -> list[CheckItem]:
    """Probe Asterisk and Slack at once; return the whole checklist."""
    directory = settings.directory
    items = [CheckItem(Mark.OK, f"config: {settings.path} is valid",
                       f"{len(directory.endpoints)} endpoint"
                       f"{'s' if len(directory.endpoints) != 1 else ''}, Slack "
                       f"{'Socket Mode' if settings.slack.socket_mode else 'HTTP mode'}")]
    test_endpoint = directory.lookup(send_test) if send_test is not None else None
    test_pbx = (settings.pbx(test_endpoint.pbx) or settings.ami) if test_endpoint else None
    channels = _channel_users(settings)
    pbxs = settings.all_pbxs
    # Every PBX and Slack at the same time: a PBX that is down costs no more than one.
    *ami_results, slack_result, store_result = await asyncio.gather(
        *(_probe_ami(pbx, timeout=timeout,
                     test_destination=test_endpoint.destination
                     if test_endpoint is not None and pbx is test_pbx else None)
          for pbx in pbxs),
        probe_slack(settings.slack, list(channels), timeout=timeout),
        _probe_store(settings, timeout=timeout))
    by_pbx: dict[str, AmiProbe | AmiError] = {}
    for pbx, result in zip(pbxs, ami_results, strict=True):
        assert isinstance(result, (AmiProbe, AmiError))
        by_pbx[pbx.name] = result
        items += _ami_items(pbx, result, several=settings.several_pbxs)
    if send_test is not None:
        items.append(_test_item(settings, send_test,
                                by_pbx[test_pbx.name] if test_pbx is not None
                                else next(iter(by_pbx.values()))))
    assert isinstance(slack_result, SlackProbe)
    items += _slack_items(settings, slack_result, channels)
    assert isinstance(store_result, StoreProbe)
    items += _store_items(store_result)
    return items


async def _probe_store(settings: Settings, *, timeout: float) -> StoreProbe:
    try:
        return await asyncio.wait_for(probe_store(settings, timeout=timeout), timeout + 1)
    except TimeoutError:  # connect_timeout covers connecting; this, a server that stalls
        return StoreProbe("postgresql" if settings.store_url else "sqlite",
                          store_location(settings), 0,
                          error=f"no answer within {timeout + 1:.0f} s")


async def _probe_ami(pbx: AmiSettings, *, timeout: float,
                     test_destination: str | None) -> AmiProbe | AmiError:
    try:
        return await probe_ami(pbx, timeout=timeout, test_destination=test_destination,
                               test_body=TEST_TEXT, test_from=pbx.from_)
    except AmiError as exc:
        return exc


def _channel_users(settings: Settings) -> dict[str, list[str]]:
    """Every mapped channel, with what is posted there ("default channel", endpoint names)."""
    users: dict[str, list[str]] = {settings.slack.default_channel: ["unknown senders"]}
    for endpoint in settings.directory.endpoints:
        users.setdefault(endpoint.channel, []).append(endpoint.name)
    return users


# -- AMI ------------------------------------------------------------------------------------

def _ami_items(ami: AmiSettings, result: AmiProbe | AmiError, *,
               several: bool = False) -> list[CheckItem]:
    """One PBX's items; with several PBXs each title says which PBX it is about."""
    label = f"AMI (PBX {ami.name})" if several else "AMI"
    section = "[ami]" if ami.key == "ami" else f"[[pbx]] {ami.name!r} ({ami.key})"
    address = f"{ami.host}:{ami.port}"
    user = ami.username
    reload_ = 'then `asterisk -rx "manager reload"`'
    if isinstance(result, AmiLoginRefused):
        return [
            CheckItem(Mark.OK, f"{label}: Asterisk answers at {address}"),
            CheckItem(Mark.FAIL, f"{label}: login as '{user}' refused", str(result),
                      f"make {section} username and {ami.secret_env} match a [{user}] section in "
                      f"manager.conf (its `secret =`), and let its `permit =` lines allow "
                      f"this machine's address; {reload_}"),
        ]
    if isinstance(result, AmiTimeout):
        return [CheckItem(Mark.FAIL, f"{label}: Asterisk at {address} stopped answering",
                          str(result), "check Asterisk's load and logs, then run the check again")]
    if isinstance(result, AmiError):
        return [CheckItem(Mark.FAIL, f"{label}: cannot log in at {address}", str(result),
                          f"check {section} host and port in the config; on the PBX, manager.conf "
                          "[general] needs `enabled = yes` and a `bindaddr`/`port` this machine "
                          "can reach (asterisk -rx \"manager show settings\"); check firewalls")]
    version = f" (AMI {result.version})" if result.version else ""
    items = [CheckItem(Mark.OK, f"{label}: logged in to {address} as '{user}'{version}")]
    if result.may_send:
        items.append(CheckItem(Mark.OK, f"{label}: '{user}' may send texts (MessageSend, "
                                        "write=message)"))
    else:
        items.append(CheckItem(Mark.FAIL, f"{label}: '{user}' may not send texts",
                               "MessageSend is not among the actions Asterisk lets it run",
                               f"in manager.conf [{user}] set `write = message`; {reload_}"))
    if "dbgettree" in result.actions:
        items.append(CheckItem(Mark.OK, f"{label}: '{user}' may read the spool of texts that "
                                        "arrived while the bridge was away (DBGetTree)"))
    else:
        items.append(CheckItem(Mark.WARN, f"{label}: '{user}' may not run DBGetTree",
                               "texts that phones send while the bridge is not connected "
                               "will not reach Slack",
                               f"in manager.conf [{user}] set `write = message,reporting`; "
                               f"{reload_}"))
    if result.reads_system:
        items.append(CheckItem(Mark.OK, f"{label}: '{user}' gets system events (read=system: "
                                        "FullyBooted)"))
    else:
        items.append(CheckItem(Mark.FAIL, f"{label}: '{user}' gets no system events",
                               "Asterisk sent no FullyBooted after the login: no read=system "
                               "(or Asterisk is still starting)",
                               f"in manager.conf [{user}] set `read = system,user`; {reload_}"))
    if result.unneeded_events:
        names = ", ".join(sorted(result.unneeded_events))
        items.append(CheckItem(
            Mark.WARN, f"{label}: '{user}' reads more than it needs (it got {names})",
            "the bridge needs read = system,user and only its own events; with more (read = "
            "all, dialplan, call, security, ...) and no name filters it receives every "
            "channel event, whose Exten/Value headers a phone fills in (the bridge refuses "
            "text events without its token, but need not see them at all)",
            f"in manager.conf [{user}] set `read = system,user` and the eventfilter(...) lines "
            f"of the shipped manager.conf; {reload_}"))
    items.append(CheckItem(
        Mark.WARN, f"{label}: not verifiable here: '{user}' gets the bridge's UserEvents (read=user)",
        "Asterisk shows a client its read permissions only by sending it events, and the "
        "bridge's UserEvent comes only with a text from a phone",
        f"make sure manager.conf [{user}] has `read = system,user` and the shipped "
        "eventfilter(...) lines; then text the bridge from a phone"))
    return items


def _test_item(settings: Settings, name: str, result: AmiProbe | AmiError) -> CheckItem:
    endpoint = settings.directory.lookup(name)
    if endpoint is None:
        close = settings.directory.suggest(name)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return CheckItem(Mark.FAIL, f"test text: no endpoint called '{name}' in the directory",
                         fix=f"give --send-test a name or alias from [[endpoints]]{hint}")
    where = f"{endpoint.name} ({endpoint.destination}" + (
        f" on PBX {endpoint.pbx})" if settings.several_pbxs else ")")
    if isinstance(result, AmiError) or result.test_sent is None:
        return CheckItem(Mark.FAIL, f"test text to {where} not sent",
                         "not logged in to Asterisk", "fix the AMI problem above first")
    if result.test_sent:
        return CheckItem(Mark.OK, f"test text: Asterisk accepted it for delivery to {where}",
                         "accepted means queued to Asterisk's SIP stack: check the phone shows "
                         f"\"{TEST_TEXT}\"")
    error = result.test_error
    if isinstance(error, AmiActionFailed) and "permission" in error.asterisk_message.lower():
        user = (settings.pbx(endpoint.pbx) or settings.ami).username
        fix = f"in manager.conf [{user}] set `write = message`"
    else:
        target = endpoint.destination.split(":", 1)[1].split("/", 1)[0]
        fix = (f"check the destination: asterisk -rx \"pjsip show endpoint {target}\" must "
               "show the endpoint with a contact (a registered phone or a static contact), or "
               "correct `destination` in the config")
    return CheckItem(Mark.FAIL, f"test text to {where} not sent", str(error), fix)


# -- Slack ----------------------------------------------------------------------------------

_TOKEN_FIX = ("set SLACK_BOT_TOKEN to the Bot User OAuth Token (xoxb-...) from the Slack app's "
              "OAuth & Permissions page; reinstall the app if the token was revoked")


def _slack_items(settings: Settings, probe: SlackProbe,
                 channels: dict[str, list[str]]) -> list[CheckItem]:
    if probe.unreachable is not None:
        return [CheckItem(Mark.FAIL, "Slack: cannot reach the Web API", probe.unreachable,
                          "check this machine's network, DNS, proxy and firewall"
                          + (" and SLACK_API_URL" if settings.slack.api_url else ""))]
    if probe.auth_error is not None or probe.identity is None:
        return [CheckItem(Mark.FAIL, "Slack: the bot token does not work",
                          f"auth.test answered {probe.auth_error}", _TOKEN_FIX)]
    identity = probe.identity
    bot = f"@{identity.user}" if identity.user else "the bot"
    team = identity.team or "the workspace"
    items = [CheckItem(Mark.OK, f"Slack: bot token works ({bot} in {team})")]
    public_ok = False
    if identity.scopes is None:
        items.append(CheckItem(Mark.WARN, "Slack: could not read the token's scopes",
                               "Slack sent no x-oauth-scopes header",
                               "check OAuth & Permissions > Bot Token Scopes lists "
                               + ", ".join(REQUIRED_SCOPES + RECOMMENDED_SCOPES)))
    else:
        missing = [s for s in REQUIRED_SCOPES if s not in identity.scopes]
        if missing:
            items.append(CheckItem(
                Mark.FAIL, f"Slack: the bot token lacks {', '.join(missing)}",
                "commands lets Slack deliver the slash command; chat:write lets the bridge post",
                f"add {', '.join(missing)} under OAuth & Permissions > Bot Token Scopes (or "
                "create the app from config/slack-app-manifest.yml), then reinstall the app"))
        else:
            items.append(CheckItem(Mark.OK, f"Slack: scopes {', '.join(REQUIRED_SCOPES)}"))
        for scope, purpose in CONVERSATION_SCOPES:
            if scope not in identity.scopes:
                items.append(CheckItem(
                    Mark.WARN, f"Slack: no {scope} scope", f"without it, {purpose}",
                    f"add {scope} under OAuth & Permissions (or recreate the app from "
                    "config/slack-app-manifest.yml) and reinstall"))
        public_ok = "chat:write.public" in identity.scopes
        if public_ok:
            items.append(CheckItem(Mark.OK, "Slack: scope chat:write.public (posts into public "
                                            "channels without an invite)"))
        else:
            items.append(CheckItem(
                Mark.WARN, "Slack: no chat:write.public scope",
                "the bot can post only into channels it was invited to",
                "add chat:write.public under OAuth & Permissions and reinstall, or invite the "
                "bot into every mapped channel"))
    if settings.slack.app_token is not None:
        if probe.app_token_error is None:
            items.append(CheckItem(Mark.OK, "Slack: app-level token works (Socket Mode)"))
        else:
            items.append(CheckItem(
                Mark.FAIL, "Slack: the app-level token does not work",
                f"apps.connections.open answered {probe.app_token_error}",
                "set SLACK_APP_TOKEN to an App-Level Token with connections:write (Basic "
                "Information > App-Level Tokens) and turn Socket Mode on, or unset it for HTTP "
                "mode"))
    unseen: list[str] = []
    for state in probe.channels:
        if state.error == "missing_scope":
            unseen.append(state.channel)
        else:
            items.append(_channel_item(state, channels.get(state.channel, []), bot, public_ok))
    if unseen:
        items.append(CheckItem(
            Mark.WARN, f"Slack: cannot see whether {bot} is in {', '.join(unseen)}",
            "conversations.info answered missing_scope: the token has no channels:read "
            "(public channels) / groups:read (private channels)",
            "make sure the bot is in those channels (in each: /invite " + bot + "), or add "
            "channels:read and groups:read to the bot scopes so this check can see"))
    return items


def _channel_item(state: ChannelState, users: list[str], bot: str,
                  public_ok: bool) -> CheckItem:
    label = f"#{state.name} ({state.channel})" if state.name else state.channel
    purpose = f"texts from {', '.join(users)}"
    invite = f"in {label} type /invite {bot}"
    if state.error == "channel_not_found":
        return CheckItem(Mark.FAIL, f"Slack: channel {state.channel} not found", purpose
                         + "; no such channel, or a private channel the bot is not in",
                         "check the channel ID in the config (channel name > View channel "
                         f"details > About); for a private channel, {invite}")
    if state.error is not None:
        return CheckItem(Mark.WARN, f"Slack: could not check channel {state.channel}",
                         f"conversations.info answered {state.error}",
                         "run the check again; if it persists, check the channel in Slack")
    if state.is_archived:
        return CheckItem(Mark.FAIL, f"Slack: channel {label} is archived", purpose,
                         "unarchive it, or map these texts to another channel in the config")
    if state.is_member or state.is_im:
        return CheckItem(Mark.OK, f"Slack: {bot} is in {label}", purpose)
    if not state.is_private and public_ok:
        return CheckItem(Mark.OK, f"Slack: {bot} may post in {label}",
                         f"{purpose}; not a member, posts with chat:write.public")
    return CheckItem(Mark.FAIL, f"Slack: {bot} is not in {label}",
                     purpose + ("" if state.is_private else
                                "; without chat:write.public it cannot post there"),
                     invite + ("" if state.is_private else
                               ", or add the chat:write.public scope"))


# -- store ----------------------------------------------------------------------------------

_DATABASE_FIX = ("check [store] url (or BRIDGE_STORE_URL): host, port and database name; the "
                 "password (in the URL, PGPASSWORD or ~/.pgpass); that PostgreSQL listens "
                 "there (listen_addresses) and its pg_hba.conf lets this host and user in")


def _store_items(probe: StoreProbe) -> list[CheckItem]:
    """Can the bridge reach its store, at which schema, and may it do its work there."""
    known = probe.known_version
    if probe.kind == "sqlite":
        if probe.error is not None:
            return [CheckItem(Mark.FAIL, f"store: {probe.where} is not a usable store file",
                              probe.error, "point [store] path at a new file, or restore this "
                              "one from a backup")]
        if probe.schema_version is None:
            return [CheckItem(Mark.OK, f"store: SQLite file {probe.where} (new: `bridge run` "
                                       "creates it)")]
        items = [CheckItem(Mark.OK, f"store: SQLite file {probe.where}")]
    else:
        if probe.error is not None:
            return [CheckItem(Mark.FAIL, f"store: cannot use the database at {probe.where}",
                              probe.error, _DATABASE_FIX)]
        items = [CheckItem(Mark.OK, f"store: connected to PostgreSQL {probe.server.split(' ')[0]} "
                                    f"at {probe.where} as '{probe.user}'")]
    version = probe.schema_version or 0
    if version > known:
        items.append(CheckItem(
            Mark.FAIL, f"store: written by a newer bridge (schema {version}; this bridge knows "
                       f"up to {known})", "`bridge run` refuses it and leaves it untouched",
            "upgrade this bridge to the version that wrote it, or point the config at another "
            "store"))
    elif version == known:
        items.append(CheckItem(Mark.OK, f"store: schema {version} (current)"))
    elif version == 0:
        items.append(CheckItem(Mark.OK, f"store: no tables yet: `bridge run` creates them "
                                        f"(schema {known})"))
    else:
        items.append(CheckItem(Mark.OK, f"store: schema {version}: `bridge run` upgrades it in "
                                        f"place to {known}"))
    if probe.kind == "postgresql" and version <= known:
        items += _database_rights_items(probe, version)
    return items


def _database_rights_items(probe: StoreProbe, version: int) -> list[CheckItem]:
    """Creating the tables needs CREATE on the schema; upgrading them also needs their owner
    (ALTER TABLE); the bridge's work needs the row rights on each."""
    user, known = probe.user, probe.known_version
    items: list[CheckItem] = []
    owner_fix = (f"let '{user}' own the store: as the database's owner, CREATE SCHEMA bridge "
                 f"AUTHORIZATION {user} and add ?options=-csearch_path%3Dbridge to the URL (or "
                 f"GRANT CREATE ON SCHEMA public TO {user}; tables created by another role: "
                 f"ALTER TABLE ... OWNER TO {user})")
    able = probe.may_create and probe.owns_tables
    why = ("it has no CREATE on the schema" if not probe.may_create else
           "the store's tables belong to another role")
    if version == 0 and not probe.may_create:
        items.append(CheckItem(Mark.FAIL, f"store: '{user}' may not create the store's tables",
                               why, owner_fix))
    elif 0 < version < known and not able:
        items.append(CheckItem(Mark.FAIL, f"store: '{user}' may not upgrade the store's tables "
                                          f"to schema {known}", why, owner_fix))
    elif version == known and not able:
        items.append(CheckItem(Mark.WARN, f"store: '{user}' may not upgrade the store's tables",
                               f"{why}: fine today; the next bridge version's schema upgrade "
                               "will need it", owner_fix))
    if probe.missing:
        tables = sorted({m.split(" on ", 1)[1] for m in probe.missing} - {"schema_version"})
        grants = [f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(tables)} TO {user}"
                  ] if tables else []
        if "SELECT on schema_version" in probe.missing:
            grants.append(f"GRANT SELECT ON schema_version TO {user}")
        items.append(CheckItem(
            Mark.FAIL, f"store: '{user}' lacks {', '.join(probe.missing)}",
            "the bridge reads, adds, updates and deletes rows in every store table",
            "as the tables' owner: " + "; ".join(grants)))
    elif version:
        items.append(CheckItem(Mark.OK, f"store: '{user}' may read and write every store "
                                        "table"))
    return items


# -- output ---------------------------------------------------------------------------------

def render(items: list[CheckItem], *, secrets: Sequence[str] = ()) -> str:
    """The checklist as printed: one line per item, detail and fix indented below it."""
    lines: list[str] = []
    for item in items:
        lines.append(f"{item.mark.value} {item.title}")
        if item.detail:
            lines.append(f"    {item.detail}")
        if item.fix and item.mark is not Mark.OK:
            lines.append(f"    fix: {item.fix}")
    failed = sum(item.mark is Mark.FAIL for item in items)
    warned = sum(item.mark is Mark.WARN for item in items)
    if failed:
        lines.append(f"\n{failed} problem{'s' if failed != 1 else ''} to fix before the bridge "
                     "can work" + (f"; {warned} to look at." if warned else "."))
    else:
        lines.append("\nReady" + (f"; {warned} item{'s' if warned != 1 else ''} to look at."
                                  if warned else "."))
    text = "\n".join(lines)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def exit_code(items: list[CheckItem]) -> int:
    return 1 if any(item.mark is Mark.FAIL for item in items) else 0


async def check(settings: Settings, *, send_test: str | None = None) -> int:
    """Run every check, print the checklist, return the exit status (0 ready, 1 not)."""
    items = await run_checks(settings, send_test=send_test)
    print(render(items, secrets=settings.secrets()), flush=True)
    return exit_code(items)
