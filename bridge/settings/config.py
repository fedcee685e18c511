"""Reads the config file and the environment once, validates everything, returns `Settings`.

Every problem is collected and reported together (file, key, what is wrong, how to fix it),
so an admin fixes the whole file in one go; `load_settings` raises one `ConfigError`.
Secrets come from the environment (or, for the AMI secret, optionally the file) and are
wrapped in `Secret`, whose repr and str never show the value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import ssl
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.core.directory import DEFAULT_PBX, Directory, Endpoint
from bridge.core.errors import ConfigError, ConfigProblem
from bridge.core.policy import AccessPolicy
from bridge.core.texts import derive_event_token
from bridge.settings.access import ENDPOINT_ACCESS_KEYS, load_access
from bridge.settings.reader import MAX_HEADER_VALUE, ConfigReader

log = logging.getLogger(__name__)

ENV = "environment"

# Words `/sip` treats as subcommands; an endpoint cannot be called one of these.
RESERVED_NAMES = frozenset({"help", "list", "status"})

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]{0,63}$")
_COMMAND = re.compile(r"^/[a-z0-9][a-z0-9_-]{0,31}$")
# MessageSend technologies Asterisk 22 knows: PJSIP and XMPP (chan_sip is gone since 21).
_DESTINATION = re.compile(r"^(pjsip|xmpp):\S.*$")


class Secret:
    """A secret string that never shows itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class AmiSettings:
    host: str
    port: int
    username: str
    secret: Secret = field(repr=False)
    from_: str | None  # optional From for MessageSend
    action_timeout: float  # seconds to wait for any AMI response
    connect_timeout: float
    tls: bool = False  # AMI over TLS (Asterisk's manager.conf tlsenable)
    ca_file: Path | None = None  # PEM CA(s) trusted for Asterisk's certificate; None: system CAs
    tls_verify: bool = True  # check the certificate chain and its name
    tls_server_name: str | None = None  # the name the certificate must carry; None: host
    # What the dialplan's text events must carry as Token (AMI_EVENT_TOKEN, else derived
    # from the AMI secret): events without it were not written by the shipped dialplan.
    event_token: Secret = field(default=Secret(""), repr=False)
    name: str = DEFAULT_PBX  # the PBX's `[[pbx]]` name; `[ami]` is the PBX "default"
    required: bool = True  # False: this PBX may be down without the bridge being unhealthy
    key: str = "ami"  # where it is configured (`ami`, `pbx[1]`), for messages about it
    secret_env: str = "AMI_SECRET"  # the environment variable its secret comes from


@dataclass(frozen=True)
class SlackSettings:
    command: str
    default_channel: str
    bot_token: Secret = field(repr=False)
    signing_secret: Secret | None = field(repr=False)
    app_token: Secret | None = field(repr=False)  # set => Socket Mode
    api_url: str | None
    port: int
    timeout: float = 10.0  # seconds for any Slack Web API call
    reply_mode: str = "thread"  # thread | channel | off: which Slack messages text a phone
    reply_modes: Mapping[str, str] = field(default_factory=dict)  # per endpoint name
    thread_idle: float = 86400.0  # seconds of quiet after which a conversation gets a new thread
    allowed_bots: frozenset[str] = frozenset()  # bot IDs whose messages may text phones

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None


@dataclass(frozen=True)
class DeliverySettings:
    channel_rate: float  # posts per second per channel; 0 = no pacing
    channel_burst: int
    max_texts_per_post: int  # texts combined into one post when a channel has a backlog
    max_chars_per_post: int
    late_after: float  # seconds; older texts are posted with a "late" note
    outbound_max_wait: float  # seconds a /sip text may wait for Asterisk before it fails
    notify: str  # where users hear about queued texts once response_url expired: dm|channel|none
    drain_timeout: float  # seconds SIGTERM waits for in-flight deliveries
    max_parts: int = 10  # a text from Slack that needs more MessageSends is refused
    # Texts a second one phone (or one sender not in the directory) may send before the rest
    # of its texts wait in the store, posted combined after other phones' texts.
    inbound_rate: float = 5.0
    inbound_burst: int = 30


@dataclass(frozen=True)
class OpsSettings:
    # The address the bridge's own HTTP listener binds to: in Socket Mode it serves only
    # /healthz and /metrics (which show the AMI address and errors), so loopback by default;
    # in HTTP mode it is also Slack's /slack/events, so all interfaces by default.
    bind: str = "127.0.0.1"


@dataclass(frozen=True)
class Settings:
    path: Path
    ami: AmiSettings  # the first (or only) PBX
    slack: SlackSettings
    directory: Directory
    store_path: Path
    delivery: DeliverySettings
    access: AccessPolicy = field(default_factory=AccessPolicy)
    # The PostgreSQL store's URL ([store] url or BRIDGE_STORE_URL); None: the SQLite file.
    # A Secret because it may carry the password; `store_secrets` are the passwords in force
    # (the URL's, PGPASSWORD), for redaction.
    store_url: Secret | None = field(default=None, repr=False)
    store_secrets: tuple[Secret, ...] = field(default=(), repr=False)
    # Several replicas on the PostgreSQL store: how long a replica's lease on a channel or a
    # PBX stream lasts unrenewed, i.e. how soon the others take over from a dead one.
    lease_seconds: float = 3.0
    ops: OpsSettings = field(default_factory=OpsSettings)

    # Every PBX, in config order: `[ami]` alone, or each `[[pbx]]` (empty: just `ami`).
    pbxs: tuple[AmiSettings, ...] = ()

    @property
    def all_pbxs(self) -> tuple[AmiSettings, ...]:
        return self.pbxs or (self.ami,)

    @property
    def several_pbxs(self) -> bool:
        return len(self.all_pbxs) > 1

    def pbx(self, name: str) -> AmiSettings | None:
        return next((p for p in self.all_pbxs if p.name == name), None)

    def secrets(self) -> list[str]:
        """Every secret value in force, for log redaction."""
        found = [self.slack.bot_token, self.slack.signing_secret, self.slack.app_token,
                 *self.store_secrets]
        for pbx in self.all_pbxs:
            found += [pbx.secret, pbx.event_token]
        return [s.reveal() for s in found if s is not None and s.reveal()]


_KNOWN_KEYS: dict[str, set[str]] = {
    "": {"ami", "pbx", "slack", "endpoints", "store", "delivery", "access", "numbers", "audit",
         "ops"},
    "ops": {"bind"},
    "store": {"path", "url", "lease_seconds"},
    "delivery": {"channel_rate", "channel_burst", "max_texts_per_post", "max_chars_per_post",
                 "late_after", "outbound_max_wait", "notify", "drain_timeout", "max_parts",
                 "inbound_rate", "inbound_burst"},
    "ami": {"host", "port", "username", "secret", "from", "action_timeout", "connect_timeout",
            "tls", "ca_file", "tls_verify", "tls_server_name"},
    "slack": {"command", "default_channel", "timeout", "reply_mode", "thread_idle",
              "allowed_bots"},
    "endpoints": {"name", "destination", "channel", "aliases", "from", "reply_mode", "pbx",
                  *ENDPOINT_ACCESS_KEYS},
}
_KNOWN_KEYS["pbx"] = _KNOWN_KEYS["ami"] | {"name", "required", "secret_env"}
# A PBX name: it becomes part of environment variable names, metric labels and keys.
_PBX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None, *,
                  mode: str = "auto") -> Settings:
    """Read `path` and the environment; return Settings or raise ConfigError listing all problems.

    `mode` picks the Slack transport: "socket" (needs SLACK_APP_TOKEN), "http" (ignores
    it), or "auto" (Socket Mode exactly when SLACK_APP_TOKEN is set).
    """
    env = dict(os.environ if environ is None else environ)
    if mode == "http":
        env.pop("SLACK_APP_TOKEN", None)
    elif mode == "socket" and not env.get("SLACK_APP_TOKEN"):
        raise ConfigError([ConfigProblem(ENV, "SLACK_APP_TOKEN", "is not set, but Socket Mode "
                                         "was asked for (--mode socket)",
                                         "export SLACK_APP_TOKEN=xapp-... (Basic Information > "
                                         "App-Level Tokens, scope connections:write)")])
    path = Path(path)
    source = str(path)
    check = ConfigReader(source)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(source, "(file)", "the config file does not exist",
                                         "copy config/bridge.example.toml there and edit it, "
                                         "or pass --config / set BRIDGE_CONFIG")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(source, "(file)", f"cannot be read: {exc}",
                                         "check the path and its permissions")]) from exc
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(source, "(syntax)", f"is not valid TOML: {exc}",
                                         "fix the line named above")]) from exc

    _warn_if_secret_exposed(path, data)
    check.unknown_keys(data, _KNOWN_KEYS[""], "")
    pbxs = _load_pbxs(check, data, env)
    slack = _load_slack(check, _table(check, data, "slack"), env)
    endpoints, reply_modes = _load_endpoints(
        check, data.get("endpoints", []),
        slack.reply_mode if slack is not None else "thread")
    pbx_names = [name for name, _ in pbxs]
    _check_endpoint_pbxs(check, data.get("endpoints", []), pbx_names)
    _check_number_pbxs(check, data.get("numbers", []), pbx_names)
    store_table = _optional_table(check, data, "store")
    store_path = _load_store(check, store_table)
    store_url, store_secrets = _load_store_url(check, store_table, env)
    lease_seconds = check.number(store_table, "lease_seconds", "store.", default=3.0, low=1,
                                 high=60)
    delivery = _load_delivery(check, _optional_table(check, data, "delivery"))
    access = load_access(check, data)
    ops = _load_ops(check, _optional_table(check, data, "ops"),
                    socket_mode=slack is not None and slack.socket_mode)

    if check.problems:
        raise ConfigError(check.problems)
    loaded = tuple(ami for _, ami in pbxs if ami is not None)
    assert loaded and len(loaded) == len(pbxs) and slack is not None
    slack = dataclasses.replace(slack, reply_modes=reply_modes)
    if len(loaded) == 1:  # one PBX: every endpoint and pattern is on it, named or not
        endpoints = [dataclasses.replace(e, pbx=loaded[0].name) for e in endpoints]
        access = dataclasses.replace(access, numbers=tuple(
            dataclasses.replace(p, pbx=loaded[0].name) for p in access.numbers))
    return Settings(path=path, ami=loaded[0], slack=slack,
                    directory=Directory(tuple(endpoints)), store_path=store_path,
                    delivery=delivery, access=access, pbxs=loaded, ops=ops,
                    store_url=store_url, store_secrets=store_secrets,
                    lease_seconds=lease_seconds)


def _load_pbxs(check: ConfigReader, data: Mapping[str, Any],
               env: Mapping[str, str]) -> list[tuple[str, AmiSettings | None]]:
    """`[ami]` (the PBX "default") or every `[[pbx]]`: (name, settings or None if invalid)."""
    if "pbx" not in data:
        return [(DEFAULT_PBX, _load_ami(check, _table(check, data, "ami"), env))]
    raw = data["pbx"]
    if "ami" in data:
        check.add("ami", "is set together with [[pbx]]",
                  "use one of them: move the [ami] keys into a [[pbx]] section with a name, "
                  "or remove the [[pbx]] sections to keep one PBX")
    if not isinstance(raw, list) or not raw:
        check.add("pbx", "must be a list of [[pbx]] tables",
                  "write each PBX as a [[pbx]] section with name, host and username")
        return [(DEFAULT_PBX, None)]
    found: list[tuple[str, AmiSettings | None]] = []
    first: dict[str, str] = {}  # name -> key where it was first used
    for index, table in enumerate(raw):
        key = f"pbx[{index}]"
        if not isinstance(table, dict):
            check.add(key, "must be a table", "write it as [[pbx]]")
            found.append((key, None))
            continue
        prefix = f"{key}."
        check.unknown_keys(table, _KNOWN_KEYS["pbx"], prefix)
        name = check.string(table, "name", prefix, required=True, example='"hq"')
        if name is not None and not _PBX_NAME.match(name):
            check.add(f"{prefix}name", f"{name!r} cannot name a PBX",
                      "use lower-case letters, digits, - and _ only (at most 32), e.g. "
                      '"hq" or "branch-2"')
            name = None
        elif name is not None and name in first:
            check.add(f"{prefix}name", f"{name!r} is already the name of {first[name]}",
                      "give every [[pbx]] its own name")
            name = None
        if name is None:
            found.append((key, None))
            continue
        first[name] = key
        env_name = "".join(c if c.isalnum() else "_" for c in name.upper())
        secret_env = check.string(table, "secret_env", prefix) or f"AMI_SECRET_{env_name}"
        required = check.boolean(table, "required", prefix, default=True)
        ami = _load_ami(check, table, env, prefix=prefix, secret_env=secret_env,
                        token_env=f"AMI_EVENT_TOKEN_{env_name}")
        if ami is not None:
            ami = dataclasses.replace(ami, name=name, required=required, key=key,
                                      secret_env=secret_env)
        found.append((name, ami))
    return found


def _check_endpoint_pbxs(check: ConfigReader, raw: Any, pbxs: list[str]) -> None:
    """Each endpoint names one of the PBXs (it may leave it out when there is only one)."""
    for index, table in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(table, dict):
            _check_pbx_key(check, table, f"endpoints[{index}].", pbxs,
                           "the PBX this phone is registered on")


def _check_number_pbxs(check: ConfigReader, raw: Any, pbxs: list[str]) -> None:
    """Each [[numbers]] pattern names the PBX (trunk) its numbers go out through."""
    for index, table in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(table, dict):
            _check_pbx_key(check, table, f"numbers[{index}].", pbxs,
                           "the PBX whose trunk these numbers are texted through")


def _check_pbx_key(check: ConfigReader, table: Mapping[str, Any], prefix: str,
                   pbxs: list[str], what: str) -> None:
    known = [p for p in pbxs if _PBX_NAME.match(p) or p == DEFAULT_PBX]
    if "pbx" not in table:
        if len(pbxs) > 1:
            check.add(f"{prefix}pbx", "is missing, and there are several PBXs",
                      f"add `pbx = \"...\"`, {what}: one of {', '.join(known)}")
        return
    value = check.string(table, "pbx", prefix)
    if value is not None and value not in pbxs:
        check.add(f"{prefix}pbx", f"{value!r} is not a PBX of this config",
                  f"use one of {', '.join(known) or '(none configured)'} ({what}), or add a "
                  f"[[pbx]] section named {value!r}")


def _load_ops(check: ConfigReader, table: dict[str, Any], *, socket_mode: bool) -> OpsSettings:
    default = "127.0.0.1" if socket_mode else "0.0.0.0"  # HTTP mode: Slack must reach it
    bind = check.string(table, "bind", "ops.", default=default) or default
    try:
        ipaddress.ip_address(bind)
    except ValueError:
        check.add("ops.bind", f"{bind!r} is not an IP address",
                  'use "127.0.0.1" (this machine only), "0.0.0.0" (every interface) or one '
                  "address of this machine")
        bind = default
    return OpsSettings(bind=bind)


def _optional_table(check: ConfigReader, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    if name not in data:
        return {}
    return _table(check, data, name)


def _load_store(check: ConfigReader, table: dict[str, Any]) -> Path:
    raw = check.string(table, "path", "store.", default="bridge-store.sqlite3")
    # Relative paths are relative to the working directory, like every other path a
    # process is given; the README says so.
    return Path(raw or "bridge-store.sqlite3")


_STORE_URL_EXAMPLE = '"postgresql://bridge@db.example.com:5432/bridge"'


def _load_store_url(check: ConfigReader, table: dict[str, Any], env: Mapping[str, str]
                    ) -> tuple[Secret | None, tuple[Secret, ...]]:
    """[store] url, or BRIDGE_STORE_URL (which wins, so a deployment can point a shared config
    at its own database); None keeps the SQLite file. Problems never echo the URL, which may
    hold a password."""
    from_env = env.get("BRIDGE_STORE_URL") or None
    if from_env is not None:
        key, source, url = "BRIDGE_STORE_URL", ENV, from_env
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url) or url != url.strip():
            check.add(key, "contains a control character or surrounding spaces",
                      f"set it to one URL like {_STORE_URL_EXAMPLE}", source=ENV)
            return None, ()
    else:
        key, source = "store.url", None
        if "url" not in table:
            return None, ()
        raw = table.get("url")
        if isinstance(raw, str) and raw != raw.strip():  # the reader would echo the value
            check.add(key, "has leading or trailing spaces", "remove the spaces")
            return None, ()
        found = check.string(table, "url", "store.", example=_STORE_URL_EXAMPLE)
        if found is None:
            return None, ()
        url = found
        if "path" in table:
            check.add("store.path", "has no effect: [store] url is set (the store is in "
                      "PostgreSQL)", "remove one of them: url for PostgreSQL, path for the "
                      "SQLite file")
    fix = (f"write it like {_STORE_URL_EXAMPLE} (the password may be in it, or in PGPASSWORD "
           "or ~/.pgpass), or remove it to keep the SQLite file ([store] path)")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        check.add(key, "is not a URL that can be read", fix, source=source)
        return None, ()
    if parts.scheme not in ("postgresql", "postgres"):
        check.add(key, f"is not a PostgreSQL URL (scheme {parts.scheme or 'missing'!r})", fix,
                  source=source)
        return None, ()
    if not parts.path.strip("/"):
        check.add(key, "names no database", "end the URL with /<database name>, e.g. "
                  + _STORE_URL_EXAMPLE, source=source)
        return None, ()
    passwords = [urllib.parse.unquote(parts.password or "")]
    passwords += urllib.parse.parse_qs(parts.query).get("password", [])  # already decoded
    # libpq uses PGPASSWORD when the URL has none; redact it whatever the URL says.
    passwords.append(env.get("PGPASSWORD", ""))
    return Secret(url), tuple(Secret(p) for p in passwords if p)


def _load_delivery(check: ConfigReader, table: dict[str, Any]) -> DeliverySettings:
    prefix = "delivery."
    notify = check.string(table, "notify", prefix, default="dm") or "dm"
    if notify not in ("dm", "channel", "none"):
        check.add("delivery.notify", f"{notify!r} is not a choice",
                  'use "dm" (a direct message from the bot), "channel" (a message only they '
                  'see, in the channel they typed in) or "none"')
    return DeliverySettings(
        channel_rate=check.number(table, "channel_rate", prefix, default=1.0, low=0,
                                  high=100),
        channel_burst=check.integer(table, "channel_burst", prefix, default=3, low=1, high=100),
        max_texts_per_post=check.integer(table, "max_texts_per_post", prefix, default=20, low=1,
                                         high=24),
        max_chars_per_post=check.integer(table, "max_chars_per_post", prefix, default=9000,
                                         low=1500, high=11000),
        late_after=check.number(table, "late_after", prefix, default=600, low=1,
                                high=30 * 86400),
        outbound_max_wait=check.number(table, "outbound_max_wait", prefix, default=3600,
                                       low=1, high=30 * 86400),
        notify=notify,
        drain_timeout=check.number(table, "drain_timeout", prefix, default=10, low=0,
                                   high=300),
        max_parts=check.integer(table, "max_parts", prefix, default=10, low=1, high=1000),
        inbound_rate=check.number(table, "inbound_rate", prefix, default=5.0, low=0.1,
                                  high=10000),
        inbound_burst=check.integer(table, "inbound_burst", prefix, default=30, low=1,
                                    high=100000),
    )


def _table(check: ConfigReader, data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        check.add(f"[{name}]", "section is missing",
                  f"add a [{name}] section (see config/bridge.example.toml)")
        return {}
    if not isinstance(value, dict):
        check.add(name, "must be a table", f"write it as a [{name}] section")
        return {}
    check.unknown_keys(value, _KNOWN_KEYS[name], f"{name}.")
    return value


def _load_ami(check: ConfigReader, table: dict[str, Any], env: Mapping[str, str], *,
              prefix: str = "ami.", secret_env: str = "AMI_SECRET",
              token_env: str = "AMI_EVENT_TOKEN") -> AmiSettings | None:
    """One PBX's AMI settings: `[ami]`, or a `[[pbx]]` table (then keys are under `prefix`
    and the secret and event token come from that PBX's own variables)."""
    section = "[ami]" if prefix == "ami." else f"[[pbx]] {prefix.rstrip('.')}"
    host = check.string(table, "host", prefix, default="127.0.0.1")
    tls = check.boolean(table, "tls", prefix, default=False)
    # Asterisk's conventional ports: 5038 plain, 5039 TLS (manager.conf tlsbindaddr).
    port = check.integer(table, "port", prefix, default=5039 if tls else 5038, low=1,
                         high=65535)
    tls_verify = check.boolean(table, "tls_verify", prefix, default=True)
    tls_server_name = check.string(table, "tls_server_name", prefix)
    ca_file = _load_ca_file(check, table, prefix)
    if table.get("tls", False) is False:  # off, not merely invalid (reported above)
        for key in ("ca_file", "tls_verify", "tls_server_name"):
            if key in table:
                check.add(f"{prefix}{key}", "has no effect: AMI over TLS is off",
                          f"add `tls = true` to {section} (and enable TLS in Asterisk's "
                          "manager.conf), or remove the key")
    username = check.string(table, "username", prefix, required=True, example='"slackbridge"')
    from_ = check.string(table, "from", prefix)
    if from_ is not None and not re.match(r"^(\"[^\"]*\"\s*)?<?sips?:", from_):
        check.add(f"{prefix}from", f"{from_!r} is not a SIP URI",
                  'write it like "sip:slack@pbx.example.com" or "\\"Slack\\" <sip:slack@pbx>"')
    action_timeout = check.number(table, "action_timeout", prefix, default=10.0, low=0.5,
                                  high=300)
    connect_timeout = check.number(table, "connect_timeout", prefix, default=5.0, low=0.5,
                                   high=120)
    secret = env.get(secret_env) or None
    if secret is None:
        secret = _file_secret(check, table, prefix)
    if not secret:
        check.add(secret_env, "no AMI secret is set",
                  f"export {secret_env}=<the secret of the AMI user in manager.conf> "
                  f"(or set {prefix}secret in the file)", source=ENV)
    elif any(c in secret for c in "\r\n\0"):
        check.add(secret_env, "contains a line break or NUL",
                  "set it to the secret exactly as in manager.conf", source=ENV)
    event_token = env.get(token_env) or None
    if event_token is not None and not re.fullmatch(r"[A-Za-z0-9_-]{16,128}", event_token):
        check.add(token_env, "must be 16 to 128 letters, digits, - or _",
                  "generate one with `python3 -c 'import secrets; print(secrets.token_hex(16))'`"
                  " and put the same in extensions.conf (SLACK_BRIDGE_EVENT_TOKEN), or unset "
                  f"it to use the one derived from {secret_env}", source=ENV)
        event_token = None
    if None in (host, username) or not secret:
        return None
    assert host is not None and username is not None
    return AmiSettings(host=host, port=port, username=username, secret=Secret(secret),
                       from_=from_, action_timeout=action_timeout,
                       connect_timeout=connect_timeout, tls=tls, ca_file=ca_file,
                       tls_verify=tls_verify, tls_server_name=tls_server_name,
                       event_token=Secret(event_token or derive_event_token(secret)))


def _file_secret(check: ConfigReader, table: Mapping[str, Any],
                 prefix: str = "ami.") -> str | None:
    """ami.secret (or a [[pbx]]'s) from the file; problems are reported without ever echoing
    the value."""
    value = table.get("secret")
    if value is None:
        return None
    if not isinstance(value, str):
        check.add(f"{prefix}secret", f"must be a string, got {type(value).__name__}",
                  'write it in quotes: `secret = "..."` (or unset it and use AMI_SECRET)')
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        check.add(f"{prefix}secret", "contains a control character (newline, tab, NUL, ...)",
                  "set it to the secret exactly as in manager.conf")
        return None
    if value != value.strip():
        check.add(f"{prefix}secret", "has leading or trailing spaces",
                  "remove them; set it to the secret exactly as in manager.conf")
        return None
    if len(value) > MAX_HEADER_VALUE:
        check.add(f"{prefix}secret", f"is {len(value)} characters long",
                  f"keep it under {MAX_HEADER_VALUE}")
        return None
    return value


def _load_ca_file(check: ConfigReader, table: Mapping[str, Any],
                  prefix: str = "ami.") -> Path | None:
    """ami.ca_file: must be a readable PEM file holding at least one CA certificate."""
    raw = check.string(table, "ca_file", prefix)
    if raw is None:
        return None
    path = Path(raw)
    fix = ("point it at the PEM file of the CA that signed Asterisk's manager.conf "
           "tlscertfile, or remove it to trust the system's CAs")
    if not path.is_file():
        check.add(f"{prefix}ca_file", f"{raw} does not exist or is not a file", fix)
        return None
    try:
        path.read_bytes()
        ssl.create_default_context(cafile=str(path))
    except PermissionError:
        check.add(f"{prefix}ca_file", f"{raw} cannot be read by this user",
                  f"make it readable to the bridge's user (e.g. `chmod 644 {raw}`)")
        return None
    except (ssl.SSLError, OSError) as exc:
        check.add(f"{prefix}ca_file", f"{raw} holds no usable PEM certificate ({exc})", fix)
        return None
    return path


def _warn_if_secret_exposed(path: Path, data: Mapping[str, Any]) -> None:
    """Log one warning per secret the file holds (the AMI secret, a password in the store's
    URL) when others may read it."""
    held: list[tuple[str, str]] = []
    pbxs = data.get("pbx")
    tables = [data.get("ami"), *(pbxs if isinstance(pbxs, list) else [])]
    if any(isinstance(t, dict) and t.get("secret") for t in tables):
        held.append(("the AMI secret (ami.secret)", "move the secret to AMI_SECRET"))
    store = data.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        try:
            password = urllib.parse.urlsplit(store["url"]).password
        except ValueError:  # reported by the validation
            password = None
        if password:
            held.append(("a database password ([store] url)",
                         "move it to PGPASSWORD or ~/.pgpass, or the URL to BRIDGE_STORE_URL"))
    if not held:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o044:
        for what, move in held:
            log.warning("config: %s holds %s and is readable by %s (mode %03o): run "
                        "`chmod 600 %s`, or %s", path, what,
                        "group and others" if mode & 0o004 else "its group", mode & 0o777,
                        path, move)


def _load_slack(check: ConfigReader, table: dict[str, Any],
                env: Mapping[str, str]) -> SlackSettings | None:
    command = check.string(table, "command", "slack.", default="/sip")
    if command is not None and not _COMMAND.match(command):
        check.add("slack.command", f"{command!r} is not a slash command name",
                  'use a leading slash and lower-case letters, e.g. "/sip"')
    default_channel = check.string(table, "default_channel", "slack.", required=True,
                                   example='"C0123456789"')
    if default_channel is not None:
        check.channel("slack.default_channel", default_channel)

    bot_token = env.get("SLACK_BOT_TOKEN", "")
    if not bot_token:
        check.add("SLACK_BOT_TOKEN", "is not set",
                  "export SLACK_BOT_TOKEN=xoxb-... (Slack app > OAuth & Permissions > "
                  "Bot User OAuth Token)", source=ENV)
    elif not bot_token.startswith("xoxb-"):
        check.add("SLACK_BOT_TOKEN", "does not start with xoxb-",
                  "use the Bot User OAuth Token, not a user (xoxp-) or app (xapp-) token",
                  source=ENV)
    app_token = env.get("SLACK_APP_TOKEN") or None
    if app_token is not None and not app_token.startswith("xapp-"):
        check.add("SLACK_APP_TOKEN", "does not start with xapp-",
                  "use an App-Level Token with connections:write (Basic Information > "
                  "App-Level Tokens), or unset it to use HTTP mode", source=ENV)
    signing_secret = env.get("SLACK_SIGNING_SECRET") or None
    if signing_secret is None and app_token is None:
        check.add("SLACK_SIGNING_SECRET", "is not set (needed in HTTP mode)",
                  "export SLACK_SIGNING_SECRET=... (Basic Information > Signing Secret), "
                  "or set SLACK_APP_TOKEN to use Socket Mode", source=ENV)
    api_url = env.get("SLACK_API_URL") or None
    if api_url is not None:
        if not re.match(r"^https?://[^\s/]+", api_url):
            check.add("SLACK_API_URL", f"{api_url!r} is not an http(s) URL",
                      "set it like https://slack.com/api/ or unset it", source=ENV)
        elif not api_url.endswith("/"):
            api_url += "/"
    port_text = env.get("PORT", "3000")
    port = 3000
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        check.add("PORT", f"{port_text!r} is not a TCP port", "set PORT to a number from 1 to "
                  "65535 (default 3000)", source=ENV)
    else:
        port = int(port_text)

    timeout = check.number(table, "timeout", "slack.", default=10.0, low=1, high=120)
    reply_mode = check.string(table, "reply_mode", "slack.", default="thread") or "thread"
    _check_reply_mode(check, "slack.reply_mode", reply_mode)
    thread_idle = check.number(table, "thread_idle", "slack.", default=86400.0, low=1,
                               high=365 * 86400)
    allowed_bots = frozenset(check.string_list(table, "allowed_bots", "slack."))
    if command is None or default_channel is None or not bot_token:
        return None
    return SlackSettings(
        command=command,
        default_channel=default_channel,
        bot_token=Secret(bot_token),
        signing_secret=Secret(signing_secret) if signing_secret else None,
        app_token=Secret(app_token) if app_token else None,
        api_url=api_url,
        port=port,
        timeout=timeout,
        reply_mode=reply_mode,
        thread_idle=thread_idle,
        allowed_bots=allowed_bots,
    )


def _check_reply_mode(check: ConfigReader, key: str, mode: str) -> None:
    if mode not in ("thread", "channel", "off"):
        check.add(key, f"{mode!r} is not a reply mode",
                  'use "thread" (replies in a phone\'s thread text it), "channel" (also '
                  'top-level messages, for a channel with one phone) or "off" (read-only)')


def _load_endpoints(check: ConfigReader, raw: Any, default_mode: str = "thread"
                    ) -> tuple[list[Endpoint], dict[str, str]]:
    """The endpoints, and the reply_mode of those that set one (`default_mode`: [slack]'s)."""
    if not isinstance(raw, list):
        check.add("endpoints", "must be a list of [[endpoints]] tables",
                  "write each endpoint as an [[endpoints]] section")
        return [], {}
    if not raw:
        check.add("endpoints", "no endpoints are configured",
                  "add at least one [[endpoints]] section with name, destination and channel")
    endpoints: list[Endpoint] = []
    modes: dict[str, tuple[str, int]] = {}  # endpoint name -> (reply_mode, index)
    owner: dict[str, str] = {}  # casefolded name/alias -> key where it was first defined
    for index, table in enumerate(raw):
        prefix = f"endpoints[{index}]."
        if not isinstance(table, dict):
            check.add(f"endpoints[{index}]", "must be a table", "write it as [[endpoints]]")
            continue
        check.unknown_keys(table, _KNOWN_KEYS["endpoints"], prefix)
        name = check.string(table, "name", prefix, required=True, example='"alice"')
        destination = check.string(table, "destination", prefix, required=True,
                                   example='"pjsip:alice"')
        channel = check.string(table, "channel", prefix, required=True, example='"C0123456789"')
        aliases = check.string_list(table, "aliases", prefix)
        if "from" in table:
            # From is what the phone writes itself; routing by it let one phone post (and
            # get replies) as another. Refused rather than silently ignored.
            check.add(f"{prefix}from", "is no longer used: the bridge knows a phone by the "
                      "endpoint Asterisk identified, never by the From header",
                      "remove it, and give the endpoint its own message_context as `bridge "
                      "asterisk-config` prints it")
        mode = check.string(table, "reply_mode", prefix)
        if mode is not None:
            _check_reply_mode(check, f"{prefix}reply_mode", mode)
            if name:
                modes[name] = (mode, index)
        if destination is not None and not _DESTINATION.match(destination):
            check.add(f"{prefix}destination", f"{destination!r} is not a MessageSend destination",
                      'start it with the technology, e.g. "pjsip:alice", '
                      '"pjsip:PJSIP/+15551234@trunk" or "xmpp:..."')
        if channel is not None:
            check.channel(f"{prefix}channel", channel)
        for key, word in [(f"{prefix}name", name)] + [
                (f"{prefix}aliases[{i}]", a) for i, a in enumerate(aliases)]:
            if word is None:
                continue
            if not _NAME.match(word):
                check.add(key, f"{word!r} cannot be typed as a /sip recipient",
                          "use letters, digits and . _ + @ - only, no spaces, at most 64")
            elif word.casefold() in RESERVED_NAMES:
                check.add(key, f"{word!r} is a /sip subcommand",
                          f"pick another name; {', '.join(sorted(RESERVED_NAMES))} are reserved")
            elif word.casefold() in owner:
                check.add(key, f"{word!r} is already used by {owner[word.casefold()]}",
                          "every name and alias must be unique (case does not count)")
            else:
                owner[word.casefold()] = key
        pbx = table.get("pbx")  # checked against the PBXs by _check_endpoint_pbxs
        if name and destination and channel:
            endpoints.append(Endpoint(name=name, destination=destination, channel=channel,
                                      aliases=tuple(aliases),
                                      pbx=pbx if isinstance(pbx, str) else DEFAULT_PBX))
    # "channel" mode (top-level messages text the phone) needs a channel with one phone;
    # thread and off are per phone, so phones sharing a channel may differ.
    for endpoint in endpoints:
        mode, index = modes.get(endpoint.name, (None, -1))
        if (mode or default_mode) != "channel":
            continue
        sharing = [e.name for e in endpoints if e.channel == endpoint.channel
                   and e is not endpoint]
        if sharing:
            key = f"endpoints[{index}].reply_mode" if mode else "slack.reply_mode"
            check.add(key, f"\"channel\" needs a channel of its own, but {endpoint.channel} "
                      f"({endpoint.name}) is also mapped to {', '.join(sharing)}",
                      "give this phone its own channel, or use \"thread\"" if mode else
                      "use \"thread\" as the default and set reply_mode = \"channel\" on "
                      "the phones that have a channel of their own")
    return endpoints, {name: mode for name, (mode, _) in modes.items()}
