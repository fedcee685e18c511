"""The Asterisk Manager Interface link: the only module that imports panoramisk.

`AmiLink` keeps one logged-in AMI connection alive for the bridge's whole life:
- connects and logs in, and when Asterisk is down at start or goes away, retries with
  backoff (1 s doubling to 10 s) and logs every state change once;
- pings on its own schedule and checks the answer, so a half-open TCP link is noticed
  (panoramisk's own ping never looks at the reply);
- sends `MessageSend` with a timeout and turns every outcome into our own result or
  exception (`bridge.core.errors`): panoramisk futures can otherwise hang across reconnects;
- turns the dialplan's `UserEvent(SlackBridgeText, ...)` into `InboundText` values, but
  only events carrying this install's event token: a phone can make Asterisk write
  `Event: UserEvent` lines into other events (its Request-URI user part is their `Exten:`),
  which an AMI user reading more than `system,user` without name filters receives; and
  warns once per event name it receives without needing it (a too wide `read=`);
- at each login, reads the dialplan's AstDB spool of recent texts, only the hours newer than
  the newest text the bridge has, streamed one entry at a time (`_catch_up`);
- speaks TLS when `[ami] tls = true` (Asterisk's manager.conf `tlsenable`), verifying the
  certificate against `ca_file` (or the system's CAs) and the host name by default;
- tags every text with its PBX's name (several PBXs: one AmiLink per `[[pbx]]`, each with
  its own backoff, pings and spool read, sharing nothing but the handler texts go to).

panoramisk's automatic reconnect is switched off (its queued actions are re-sent blindly
after a reconnect, which could send a text twice); reconnecting is ours.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import panoramisk
import panoramisk.actions
import panoramisk.ami_protocol

from bridge.core.directory import DEFAULT_PBX
from bridge.core.errors import (
    AmiActionFailed,
    AmiError,
    AmiLoginRefused,
    AmiTimeout,
    AmiUnavailable,
    AsteriskShuttingDown,
    PhoneNotRegistered,
)
from bridge.core.presence import ContactChange, PhonePresence, pjsip_endpoint
from bridge.core.texts import (
    TEXT_EVENT,
    InboundText,
    MalformedEvent,
    decode_spool_entry,
    decode_text_event,
)
from bridge.settings.config import AmiSettings

log = logging.getLogger(__name__)

TEXT_EVENT_PATTERN = "UserEvent"
# Every event the bridge asks for (the shipped manager.conf filters let only these through).
_NEEDED_EVENTS = frozenset({"UserEvent", "FullyBooted", "DBGetTreeResponse",
                            "DBGetTreeComplete", "DBGetResponse", "DBGetComplete",
                            "ContactStatus", "ContactList", "ContactListComplete"})
SPOOL_FAMILY = "slack-bridge-spool"  # the AstDB family extensions.conf writes
# Where extensions.conf keeps the hours that hold texts ("-"-separated YYYYMMDDHH).
SPOOL_STATE_FAMILY = "slack-bridge-spool-state"
SPOOL_HOURS_KEY = "hours"
SPOOL_MINUTES_KEY = "minutes-"  # + YYYYMMDDHH: that hour's minutes that hold texts
# The dialplan deletes an hour once it is more than 24 h old, but only when a text arrives:
# after a quiet spell older ones may still be there. The bridge never reads past this.
SPOOL_KEEP_SECONDS = 25 * 3600
_PING_INTERVAL = 5.0
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 10.0
_SHUTTING_DOWN = "Asterisk is shutting down"  # manager.c's answer to any action then
_NO_MESSAGING = "Message technology not found."  # MessageSend while res_pjsip_messaging is out

TextHandler = Callable[[InboundText | MalformedEvent], None]
SpoolMark = Callable[[], Awaitable[float | None]]


class _StreamedList(panoramisk.actions.Action):  # type: ignore[misc]
    """A list action (DBGetTree) whose events are handed to `on_event` as they arrive.

    panoramisk keeps every event of a list action until the list is complete: for a spool of
    100,000 texts that was half a gigabyte. This keeps none; its future resolves to the
    action's response once the `...Complete` event (or an error) arrives.
    """

    def __init__(self, fields: dict[str, str],
                 on_event: Callable[[Mapping[str, str]], None]) -> None:
        super().__init__(fields)
        self._on_event = on_event
        self.events = 0

    def add_message(self, message: Any) -> bool:
        if not self.responses:  # the response to the action itself
            self.responses.append(message)
            if getattr(message, "success", False):
                return False  # a list follows
        elif str(message.get("Event", "")).endswith("Complete"):
            pass
        else:
            self.events += 1
            self._on_event(message)
            return False
        if not self.future.done():
            self.future.set_result(self.responses[0])
        return True


def spool_hour(unix_time: float) -> str:
    """The spool's bucket (UTC YYYYMMDDHH) a text of `unix_time` is kept in."""
    return time.strftime("%Y%m%d%H", time.gmtime(unix_time))


def _older_texts(counted: int, minutes: int, hours: int) -> str:
    """What a new store's login left in the spool: `counted` texts it read and did not
    relay, and the listed minutes and hours before it that it did not read at all."""
    parts = [f"{counted} text{'s' if counted != 1 else ''} from the minute it was created"
             ] if counted else []
    unread = [f"{n} earlier {unit}{'s' if n != 1 else ''}"
              for n, unit in ((minutes, "minute"), (hours, "hour")) if n]
    if unread:
        parts.append(f"those of {' and '.join(unread)} of the spool (not read, so as not to "
                     f"hold up Asterisk)")
    return "; ".join(parts)


def spool_entry_time(key: str) -> float | None:
    """The Asterisk time in a spool key `/slack-bridge-spool/<hour>/<time>-<sha1>`."""
    leaf = key.rsplit("/", 1)[-1].partition("-")[0]
    try:
        return float(leaf)
    except ValueError:
        return None


_EOM = "\r\n\r\n"  # the blank line that ends every AMI message
_TEXT_EVENT_START = "Event: UserEvent\r\n"
_TEXT_EVENT_LINE = f"\r\nUserEvent: {TEXT_EVENT}\r\n"


class _Protocol(panoramisk.ami_protocol.AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol, with the bridge's text events read on a short path.

    Measured at 1,000-2,000 texts a second, panoramisk's reading of each event (line by
    line into a case-insensitive dict built key by key, then matched against every
    registered pattern by regex) was a fifth of the bridge's CPU. An event that is a text,
    written by the shipped dialplan (`Event: UserEvent`, `UserEvent: SlackBridgeText`, each
    header once, no ActionID), becomes a plain dict of its headers, handed to the manager's
    `on_text_event` in stream order; every other message goes panoramisk's way.
    """

    def data_received(self, data: bytes) -> None:
        on_text = getattr(self.factory, "on_text_event", None)
        if self.version is None or on_text is None:  # the banner; a manager without texts
            super().data_received(data)
            return
        stream = data.decode(getattr(self, "encoding", "ascii"), "ignore")
        if self.queue:
            stream = self.queue.popleft() + stream
        chunks = stream.split(_EOM)
        self.queue.append(chunks.pop())
        for chunk in chunks:
            chunk = chunk.strip()
            fields = _text_event(chunk)
            if fields is not None:
                on_text(fields)
                continue
            message = panoramisk.Message.from_line(chunk)
            if message is not None:
                self.handle_message(message)


def _text_event(chunk: str) -> dict[str, str] | None:
    """The headers of a text event as a dict; None for any other message, or for one
    this path does not read exactly as panoramisk would (a header twice, an ActionID)."""
    if not chunk.startswith(_TEXT_EVENT_START) or _TEXT_EVENT_LINE not in chunk:
        return None
    fields: dict[str, str] = {}
    for line in chunk.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            if key in fields:
                return None
            fields[key] = value
    return None if "ActionID" in fields else fields


class _Manager(panoramisk.Manager):  # type: ignore[misc]
    """panoramisk's Manager with its self-reconnect replaced by callbacks into AmiLink."""

    def __init__(self, *, on_lost: Callable[[object], None], server_hostname: str | None = None,
                 on_text_event: Callable[[Mapping[str, str]], None] | None = None,
                 **config: Any) -> None:
        super().__init__(protocol_factory=_Protocol, **config)
        self._on_lost = on_lost
        self._server_hostname = server_hostname
        # The text events (see _Protocol); None: they are dispatched like any other event.
        self.on_text_event = on_text_event

    @classmethod
    def for_settings(cls, settings: AmiSettings, *, on_lost: Callable[[object], None],
                     forgetable_actions: tuple[str, ...], events: str = "on",
                     on_text_event: Callable[[Mapping[str, str]], None] | None = None,
                     ) -> _Manager:
        """A manager that logs in as `settings` say, on the running loop. It never pings or
        reconnects by itself: its user pings and checks the answer, and reconnects.
        `events` is the login's event mask (`on`: every event the AMI user may read)."""
        return cls(
            on_lost=on_lost,
            on_text_event=on_text_event,
            loop=asyncio.get_running_loop(),
            host=settings.host,
            port=settings.port,
            username=settings.username,
            secret=settings.secret.reveal(),
            ssl=tls_context(settings),
            server_hostname=settings.tls_server_name,
            ping_delay=10**6,
            reconnect_timeout=10**6,
            forgetable_actions=forgetable_actions,
            events=events,
        )

    def connect(self) -> asyncio.Task[Any]:
        # panoramisk's connect() cannot pass server_hostname (ami.tls_server_name).
        context = self.config["ssl"] or None
        task: asyncio.Task[Any] = asyncio.ensure_future(self.loop.create_connection(
            self.config["protocol_factory"], self.config["host"], self.config["port"],
            ssl=context, server_hostname=self._server_hostname if context else None))
        task.add_done_callback(self.connection_made)
        return task

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # AmiLink awaits the same task and reports the error itself
        super().connection_made(f)

    def connection_lost(self, exc: object) -> None:
        self._connected = False
        pinger = getattr(self, "pinger", None)
        if pinger is not None:
            pinger.cancel()
            self.pinger = None
        self._on_lost(exc)


def tls_context(settings: AmiSettings) -> ssl.SSLContext | None:
    """The client TLS context for `[ami] tls = true`, or None for plain TCP.

    With `ca_file` only the CAs in that file are trusted (not the system's as well).
    """
    if not settings.tls:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None)
    if not settings.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect_failed(settings: AmiSettings, exc: OSError) -> AmiUnavailable:
    """Why a TCP/TLS connection to AMI failed, phrased for the admin who fixes it."""
    address = f"{settings.host}:{settings.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        name = settings.tls_server_name or settings.host
        return AmiUnavailable(
            f"TLS: Asterisk's certificate at {address} was not accepted "
            f"({exc.verify_message or exc}): check [ami] ca_file (the CA that signed "
            f"manager.conf's tlscertfile) and that the certificate is issued for '{name}' "
            f"(or set [ami] tls_server_name)")
    if isinstance(exc, ssl.SSLError):
        return AmiUnavailable(
            f"TLS handshake with {address} failed ({exc.reason or exc}): is this AMI's TLS "
            f"port (manager.conf tlsenable = yes, tlsbindaddr; usually 5039)?")
    return AmiUnavailable(f"cannot connect to {address}: {exc.strerror or exc}")


async def _connect_and_login(manager: _Manager, settings: AmiSettings, address: str,
                             limit: Callable[[], float]) -> None:
    """Connect `manager` and wait for its login; AmiUnavailable / AmiLoginRefused otherwise.

    `limit()` gives the seconds each step may take (asked again before each step).
    """
    step = limit()
    try:
        await asyncio.wait_for(manager.connect(), step)
    except TimeoutError:
        raise AmiUnavailable(f"no answer from {address} within {step:g} s") from None
    except OSError as exc:  # ssl.SSLError included
        raise _connect_failed(settings, exc) from exc
    login = manager.authenticated_future
    if login is None:
        raise AmiUnavailable(f"{address} closed the connection before login")
    try:
        # shielded: cancelling the login future would make panoramisk's own done callback
        # (Manager.login) raise CancelledError into the loop's error log
        response = await asyncio.wait_for(asyncio.shield(login), limit())
    except TimeoutError:
        login.remove_done_callback(manager.login)
        raise AmiUnavailable(f"{address} did not answer the login in time "
                             f"(is it really AMI?)") from None
    if not getattr(response, "success", False):
        raise AmiLoginRefused(
            f"Asterisk refused the AMI login for user '{settings.username}' "
            f"({response.get('Message', 'no reason given')}): check [ami] username, "
            f"AMI_SECRET and the user's permit= lines in manager.conf")


def _succeeded(answer: object) -> bool:
    """Asterisk answered `Response: Success` (or `Follows`). Not panoramisk's `success`,
    which also takes `Goodbye` and anything that looks like an event for a success: a text
    is only sent when Asterisk said so."""
    if not isinstance(answer, Mapping):
        return False
    return str(answer.get("Response", "")).strip().lower() in ("success", "follows")


class AmiLink:
    """One supervised, logged-in AMI connection."""

    def __init__(self, settings: AmiSettings, *, on_text: TextHandler,
                 spool_mark: SpoolMark | None = None,
                 spool_since: float | None = None,
                 presence: PhonePresence | None = None,
                 consuming: Callable[[], bool] | None = None) -> None:
        """`spool_mark` gives the newest Asterisk time of a text the bridge has stored: the
        spool read at login skips what is older (None: read the whole spool). Spooled texts
        from before `spool_since` (unix time) are not relayed: the store is newer than them,
        so it cannot tell whether they are in Slack already (None: relay all). `presence` is
        fed from ContactStatus events (bridge.core.presence). `consuming` says whether this
        bridge takes the PBX's texts right now (several replicas: the one holding its events
        lease); while not, text events are left to the replica that does and the spool is
        not read (`take_over` reads it when this one becomes the consumer)."""
        self._settings = settings
        self._consuming = consuming or (lambda: True)
        self._catch_up_task: asyncio.Task[None] | None = None
        self._on_text = on_text
        self._spool_mark = spool_mark
        self._spool_since = spool_since
        self._presence = presence
        self._contacts_warned = False
        self._manager: _Manager | None = None
        self._ready = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self.last_error = "not connected yet"
        self.reconnects = 0
        self.connected_since: float | None = None
        # Live texts waiting for the spool read to end (None: handed over as they come).
        self._held: list[InboundText | MalformedEvent] | None = None
        self._reading_spool = False
        self._spool_warned = False
        self._unneeded_seen: set[str] = set()  # event names warned about (once each)
        self.forged_events = 0  # text events refused for a missing or wrong token
        self.text_events = 0  # text events Asterisk sent this link (taken or left)
        # The events Asterisk sends this session: `on` (all the AMI user may read) while this
        # bridge takes the PBX's texts, `system` (FullyBooted, ContactStatus) while another
        # replica does, so a replica standing by costs Asterisk and itself nothing per text.
        self.events = ""
        self._events_lock = asyncio.Lock()
        self._events_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The PBX this link is to (`[[pbx]]` name; "default" for `[ami]`)."""
        return self._settings.name

    @property
    def required(self) -> bool:
        """Whether the bridge is unhealthy while this PBX is not logged in."""
        return self._settings.required

    @property
    def _site(self) -> str:
        # Log and error suffix naming the PBX, when it has a name of its own.
        return "" if self._settings.name == DEFAULT_PBX else f" (PBX {self._settings.name})"

    def _tag(self, item: InboundText | MalformedEvent) -> InboundText | MalformedEvent:
        """The text as coming from this PBX. Its event ID is prefixed with the PBX's name
        (not for "default", whose IDs stay as they were), so two PBXs' texts never count as
        one another's repeats."""
        name = self._settings.name
        if name == DEFAULT_PBX:
            return item
        event_id = f"{name}/{item.event_id}" if item.event_id else ""
        if isinstance(item, InboundText):
            return dataclasses.replace(item, pbx=name, event_id=event_id)
        return dataclasses.replace(item, event_id=event_id)

    @property
    def ready(self) -> bool:
        """Connected and logged in right now."""
        return self._ready.is_set()

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    async def start(self) -> None:
        """Start connecting in the background; returns at once (Asterisk may still be down)."""
        self._task = asyncio.create_task(self._supervise(), name=f"ami-link-{self.name}")

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        self._lost.set()
        for task in (self._task, self._catch_up_task, self._events_task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._teardown("bridge stopping")

    def take_over(self) -> None:
        """This bridge has just become the one taking this PBX's texts (another replica
        stopped): ask Asterisk for the text events, then read the spool from the newest text
        the store has, for what arrived while no replica was taking them (a text arriving
        in between is in both; the store keeps one). Not connected: the next login does."""
        if not self.ready or self._stopping or (
                self._catch_up_task is not None and not self._catch_up_task.done()):
            return
        log.info("AMI: taking this PBX's texts over from another replica%s; reading the "
                 "spool for what arrived meanwhile", self._site)
        self._hold()  # before Asterisk sends the first text

        async def take() -> None:
            try:
                await self._ask_for_events()
                await self._catch_up()
            finally:
                self._release()
        self._catch_up_task = asyncio.create_task(take(), name=f"ami-take-over-{self.name}")
        self._catch_up_task.add_done_callback(self._caught_up)

    def stand_by(self) -> None:
        """Another replica takes this PBX's texts now: Asterisk stops sending them here."""
        if not self.ready or self._stopping:
            return
        self._events_task = asyncio.create_task(self._ask_for_events(),
                                                name=f"ami-stand-by-{self.name}")

    def _events_wanted(self) -> str:
        return "on" if self._consuming() else "system"

    async def _ask_for_events(self) -> None:
        """Set the session's event mask to what this bridge needs right now. Serialised, and
        the wish is read when the action is sent, so the last one sent is the current one."""
        async with self._events_lock:
            wanted = self._events_wanted()
            if wanted == self.events:
                return
            try:
                await self._action({"Action": "Events", "EventMask": wanted})
            except AmiError as exc:  # the connection is going: the next login sets it
                log.warning("AMI: could not change the events Asterisk sends%s: %s",
                            self._site, exc)
                return
            self.events = wanted

    def _caught_up(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("AMI: reading the spool at a take-over failed%s: %s", self._site,
                      task.exception())

    async def message_send(self, *, destination: str, body: str, from_: str | None) -> None:
        """Send one text (at most one segment) with MessageSend; raise AmiError if not queued.

        The body travels as `Base64Body`, so no byte of it can end an AMI line. `destination`
        and `from_` come from validated config and never contain CR/LF.
        """
        action = {
            "Action": "MessageSend",
            "Destination": destination,
            "Base64Body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        }
        if from_:
            action["From"] = from_
        try:
            await self._action(action)
        except AmiActionFailed as exc:
            # Asterisk says the same for a missing endpoint and an unregistered phone; presence
            # tells them apart, so the sender hears which.
            endpoint = pjsip_endpoint(destination)
            if self._presence is not None and endpoint is not None \
                    and self._presence.state_of(destination) == "offline":
                raise PhoneNotRegistered(exc.action, exc.asterisk_message, endpoint) from exc
            raise

    async def ping(self) -> None:
        await self._action({"Action": "Ping"})

    async def _list_action(self, action: dict[str, str]) -> list[Mapping[str, str]]:
        """An action answered by an event list; returns the events (without the response)."""
        answer = await self._action(action)
        if not isinstance(answer, list):  # a plain Success without an event list
            return []
        return [event for event in answer if "Event" in event]

    async def _action(self, action: dict[str, str]) -> Any:
        name = action["Action"]
        manager = self._manager
        if not self.ready or manager is None:
            raise AmiUnavailable(f"not connected to Asterisk at {self.address}{self._site} "
                                 f"({self.last_error})")
        # as_list=None, not True, for list actions too: panoramisk recognises a list by its
        # `EventList: start`, and with as_list=True it never resolves an action answered by a
        # plain `Response: Error` (e.g. DBGetTree without write=reporting: Permission denied).
        future: asyncio.Future[Any] = manager.send_action(dict(action), as_list=None)
        self._pending.add(future)
        try:
            async with asyncio.timeout(self._settings.action_timeout):
                response = await future
        except TimeoutError:
            # A link that leaves an action unanswered is not trusted with the next one:
            # drop it, so the supervisor reconnects and nothing more piles up unanswered.
            if manager is self._manager:
                self._connection_lost(None)
            raise AmiTimeout(f"Asterisk did not answer {name} within "
                             f"{self._settings.action_timeout:g} s") from None
        finally:
            self._pending.discard(future)
        first = (response[0] if response else {}) if isinstance(response, list) else response
        if not _succeeded(first):
            message = str(first.get("Message", "") if isinstance(first, Mapping) else "")
            if message == _NO_MESSAGING:
                # res_pjsip_messaging unloaded: the first step of a restart that loses no
                # phone's text (README, Asterisk restarts). Nothing was sent; it comes back.
                raise AsteriskShuttingDown(f"Asterisk at {self.address} cannot send texts "
                                           f"right now ({message.rstrip('.')})")
            if message == _SHUTTING_DOWN:
                # Measured: `core stop now`/`gracefully` and SIGTERM refuse every action with
                # this until the connection closes (up to ~1 s, or while calls last when
                # graceful). Nothing was sent: the link counts as gone, and texts wait for
                # the reconnect instead of failing.
                if manager is self._manager:
                    self._connection_lost(None)
                raise AsteriskShuttingDown(f"Asterisk at {self.address} is shutting down")
            raise AmiActionFailed(name, message or "unreadable answer")
        return response

    # -- connection supervision -------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = _BACKOFF_FIRST
        first = True
        while not self._stopping:
            self._hold()  # a text from the login on waits until the spool is read
            try:
                await self._connect()
                if not first:
                    self.reconnects += 1
                first = False
                backoff = _BACKOFF_FIRST
                log.info("AMI: connected to %s%s as %s%s", self.address,
                         " over TLS" if self._settings.tls else "", self._settings.username,
                         self._site)
                await self._ask_for_events()  # the lease may have moved during the login
                if self._consuming():
                    await self._catch_up()
                self._release()
                await self._list_contacts()
                await self._watch()
            except AmiError as exc:
                changed = str(exc) != self.last_error
                self.last_error = str(exc)
                (log.warning if changed else log.debug)(
                    "AMI: %s%s; retrying in %.0f s", exc, self._site, backoff)
            finally:
                self._release()
                self._teardown(self.last_error)
            if self._stopping:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _connect(self) -> None:
        settings = self._settings
        self._lost = asyncio.Event()
        # The login sets the event mask this bridge needs (a standby asks for no texts).
        events = self._events_wanted()
        manager = _Manager.for_settings(settings, on_lost=self._connection_lost,
                                        forgetable_actions=("ping", "login", "messagesend"),
                                        events=events,
                                        on_text_event=lambda event: self._dispatch(None, event))
        manager.register_event(TEXT_EVENT_PATTERN, self._dispatch)
        manager.register_event("FullyBooted", self._fully_booted)
        manager.register_event("*", self._notice_unneeded)
        manager.register_event("ContactStatus", self._contact_status)
        self._manager = manager
        await _connect_and_login(manager, settings, self.address,
                                 lambda: settings.connect_timeout)
        if self._lost.is_set():
            raise AmiUnavailable(f"connection to {self.address} dropped right after login")
        self.last_error = ""
        self.connected_since = time.monotonic()
        self.events = events
        self._ready.set()

    async def _watch(self) -> None:
        """Return when the connection is lost or stops answering pings."""
        while not self._stopping:
            try:
                await asyncio.wait_for(self._lost.wait(), _PING_INTERVAL)
            except TimeoutError:
                pass
            else:
                raise AmiUnavailable(f"connection to {self.address} lost")
            try:
                await self.ping()
            except AmiError as exc:
                raise AmiUnavailable(f"Asterisk at {self.address} stopped answering "
                                     f"({exc})") from exc

    def _connection_lost(self, exc: object) -> None:
        self._ready.clear()
        self._lost.set()
        self._fail_pending()

    def _fail_pending(self) -> None:
        for future in list(self._pending):
            if not future.done():
                future.set_exception(AmiUnavailable(
                    f"the connection to {self.address} dropped before Asterisk answered"))
        self._pending.clear()

    def _teardown(self, reason: str) -> None:
        was_connected = self.connected_since is not None
        self._ready.clear()
        self._fail_pending()
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.callbacks.clear()
            manager.patterns.clear()
            manager.close()
        if was_connected:
            log.warning("AMI: disconnected from %s%s: %s", self.address, self._site, reason)
            if self._presence is not None:
                self._presence.forget()  # changes while away are missed: unknown again
        self.connected_since = None
        self.events = ""

    # -- events -------------------------------------------------------------------------

    def _dispatch(self, _manager: object, event: Mapping[str, str]) -> None:
        if str(event.get("UserEvent", "")) != TEXT_EVENT:
            return
        self.text_events += 1
        if not self._consuming():
            return  # another replica takes this PBX's texts (and has this one)
        expected = self._settings.event_token.reveal()
        token = str(event.get("Token", "")).strip()
        if not hmac.compare_digest(token.encode(), expected.encode()):
            # Never log either token. Forged events carry none (a phone cannot know it); a
            # dialplan that is not current carries the placeholder, or another install's.
            self.forged_events += 1
            log.error(
                "AMI: refused a %s event %s: it is not from this bridge's dialplan (forged "
                "through another AMI event, or extensions.conf's SLACK_BRIDGE_EVENT_TOKEN is "
                "not the one `bridge asterisk-config` prints for this bridge)", TEXT_EVENT,
                "without a Token" if not token else "with a wrong Token")
            return
        try:
            decoded = decode_text_event(event)
        except Exception:  # one bad event must not stop the event stream
            log.exception("AMI: could not decode a %s event", TEXT_EVENT)
            return
        decoded = self._tag(decoded)
        if self._held is not None:
            self._held.append(decoded)  # after the spool, to keep arrival order
        else:
            self._on_text(decoded)

    async def _catch_up(self) -> None:
        """Hand over texts spooled in AstDB while the bridge was away, oldest first.

        The dialplan keeps a copy of every text in AstDB for 24-25 hours, one family per hour
        and in it one per minute (see extensions.conf). Only what is from the minute of the
        newest text the store has onwards is read (that minute's hour by the minutes it lists,
        each later hour whole), streamed entry by entry in time order, and entries older than
        that text are skipped before they are decoded: what is left is what the bridge does not have yet
        (give or take the last moments before it went away; the store drops those repeats by
        their MessageId). Live texts are held from before Asterisk is asked for them
        (`_hold`) and handed over after: stored first, one would move the store's newest
        text past the texts of the gap, which would be skipped as already had (lost).
        """
        if self._reading_spool:
            return  # the read under way started after the hold: it covers this one
        self._reading_spool = True
        self._hold()
        try:
            try:
                hours = await self._spool_hours()
                mark = await self._spool_mark() if self._spool_mark is not None else None
                since = max(mark or 0.0, time.time() - SPOOL_KEEP_SECONDS)
                created = self._spool_since
                # A store that never took a text (new) relays nothing spooled before it was
                # created: reading starts at that minute, and the earlier ones are only
                # counted from the dialplan's lists (streaming a day of spool would hold
                # AstDB's lock, and with it the PBX's own texts, for a second or more).
                start = since
                if mark is None and created is not None and created > since:
                    start = created
                first = spool_hour(start)
                relayed = skipped = older = 0
                families = 0
                earlier_hours = sum(1 for h in hours if spool_hour(since) <= h < first)
                earlier_minutes = 0
                for hour in sorted(h for h in hours if h >= first):
                    listed, skipped_minutes = await self._spool_families(
                        hour, start, first=hour == first)
                    earlier_minutes += skipped_minutes if start > since else 0
                    for family, own in listed:
                        got, passed, before_store = await self._read_spool_family(
                            family, since, created, own_only=own)
                        families += 1
                        relayed += got
                        skipped += passed
                        older += before_store
            except AmiActionFailed as exc:
                if not self._spool_warned:
                    self._spool_warned = True
                    log.warning(
                        "AMI: cannot read the spool of texts that arrived while the bridge was "
                        "away (%s): add `reporting` to the AMI user's write= line in "
                        "manager.conf, or such texts are lost", exc.asterisk_message)
                return
            except AmiError as exc:
                log.warning("AMI: reading the spool failed (%s); will retry on reconnect", exc)
                return
            if older or earlier_minutes or earlier_hours:
                log.warning(
                    "AMI: texts in Asterisk's spool are older than this store (created %s) "
                    "and are NOT relayed: %s. A new store cannot know whether they are in "
                    "Slack already, and reposting them all could double every one. To relay "
                    "them anyway, restart with `bridge run --replay-spool`",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created or 0.0)),
                    _older_texts(older, earlier_minutes, earlier_hours))
            log.info("AMI: %d texts from Asterisk's spool handed over, %d older ones the bridge "
                     "already had skipped (hours read: %d, AstDB families: %d)%s", relayed,
                     skipped, sum(1 for h in hours if h >= first), families, self._site)
        finally:
            self._reading_spool = False
            self._release()

    def _hold(self) -> None:
        """Keep live texts in memory, in arrival order, until `_release`."""
        if self._held is None:
            self._held = []

    def _release(self) -> None:
        """Hand the held texts over and stop holding (not while the spool is read)."""
        if self._reading_spool:
            return
        held, self._held = self._held, None
        for text in held or []:
            self._on_text(text)

    def _notice_unneeded(self, _manager: object, event: Mapping[str, str]) -> None:
        name = str(event.get("Event", ""))
        if name in _NEEDED_EVENTS or name in self._unneeded_seen:
            return
        self._unneeded_seen.add(name)
        log.warning("AMI: Asterisk sends this bridge %s events, which it does not need: the "
                    "AMI user '%s' reads more than `system,user` or lacks the shipped "
                    "eventfilter lines (see manager.conf from `bridge asterisk-config`)",
                    name, self._settings.username)

    async def _spool_hours(self) -> list[str]:
        """The spool's hours that hold texts, from the dialplan's own list (one AstDB read)."""
        try:
            answer = await self._list_action({"Action": "DBGet", "Family": SPOOL_STATE_FAMILY,
                                              "Key": SPOOL_HOURS_KEY})
        except AmiActionFailed as exc:
            if "not found" in exc.asterisk_message.lower():
                return []  # no text has reached the dialplan's spool yet
            raise
        value = next((str(event.get("Val", "")) for event in answer
                      if event.get("Event") == "DBGetResponse"), "")
        return [hour for hour in value.split("-") if len(hour) == 10 and hour.isdigit()]

    async def _spool_families(self, hour: str, since: float, *,
                              first: bool) -> tuple[list[tuple[str, bool]], int]:
        """The AstDB families to read for `hour`, in time order, each with whether only its
        own entries count (not its minutes'), and how many listed minutes are left out as
        before `since`. An hour after the first one is read whole (its minutes come in key
        order: time order); the first hour (of the store's newest text, or a new store's
        creation) by the minutes its list holds from `since`'s on (a busy hour's earlier
        minutes are not streamed again). Without a list (a dialplan before minutes) the hour
        is read whole; one an older dialplan began ("x") has that dialplan's texts right
        under it, earlier than its minutes: those, then the minutes."""
        whole = [(f"{SPOOL_FAMILY}/{hour}", False)]
        try:
            answer = await self._list_action({"Action": "DBGet", "Family": SPOOL_STATE_FAMILY,
                                              "Key": f"{SPOOL_MINUTES_KEY}{hour}"})
        except AmiActionFailed as exc:
            if "not found" in exc.asterisk_message.lower():
                return whole, 0
            raise
        listed = next((str(event.get("Val", "")) for event in answer
                       if event.get("Event") == "DBGetResponse"), "").split("-")
        minutes = sorted({int(m) for m in listed if len(m) == 2 and m.isdigit()})
        mixed = "x" in listed
        if not minutes or (not first and not mixed):
            return whole, 0
        start = time.gmtime(since).tm_min if first and spool_hour(since) == hour else 0
        own = [(f"{SPOOL_FAMILY}/{hour}", True)] if mixed else []
        return (own + [(f"{SPOOL_FAMILY}/{hour}/{m:02d}", False) for m in minutes
                       if m >= start], sum(1 for m in minutes if m < start))

    async def _read_spool_family(self, family: str, since: float, created: float | None, *,
                                 own_only: bool) -> tuple[int, int, int]:
        """Stream one hour or minute of the spool into the bridge (`own_only`: not the
        entries of its minutes); (handed over, skipped as already had, not relayed as older
        than the store)."""
        counts = [0, 0, 0]
        depth = family.count("/") + 2  # "/family/.../<time>-<sha1>"

        def on_entry(entry: Mapping[str, str]) -> None:
            if entry.get("Event") != "DBGetTreeResponse":
                return
            if own_only and str(entry.get("Key", "")).count("/") != depth:
                return
            at = spool_entry_time(str(entry.get("Key", "")))
            # At the mark itself is the newest text the store took (one message thread
            # stamps them: no two texts share a microsecond).
            if at is not None and at <= since:
                counts[1] += 1
                return
            if at is not None and created is not None and at < created:
                counts[2] += 1
                return
            counts[0] += 1
            self._on_text(self._tag(decode_spool_entry(str(entry.get("Val", "")))))

        action = _StreamedList({"Action": "DBGetTree", "Family": family}, on_entry)
        try:
            await self._streamed(action)
        except AmiActionFailed as exc:
            if "not found" not in exc.asterisk_message.lower():
                raise  # else: the hour was deleted meanwhile, or never held a text
        return counts[0], counts[1], counts[2]

    async def _streamed(self, action: _StreamedList) -> None:
        """Send a streamed list action; wait while its events keep coming."""
        manager = self._manager
        if not self.ready or manager is None:
            raise AmiUnavailable(f"not connected to Asterisk at {self.address}{self._site} "
                                 f"({self.last_error})")
        future: asyncio.Future[Any] = manager.send_action(action)
        self._pending.add(future)
        try:
            seen = -1
            while True:
                try:
                    response = await asyncio.wait_for(asyncio.shield(future),
                                                      self._settings.action_timeout)
                    break
                except TimeoutError:
                    if action.events == seen:  # nothing arrived for a whole timeout
                        if manager is self._manager:
                            self._connection_lost(None)
                        raise AmiTimeout(f"Asterisk stopped answering {action['Action']} "
                                         f"for {self._settings.action_timeout:g} s") from None
                    seen = action.events
        finally:
            self._pending.discard(future)
        if not getattr(response, "success", False):
            raise AmiActionFailed(str(action["Action"]), str(response.get("Message", "")))

    def _contact_status(self, _manager: object, event: Mapping[str, str]) -> None:
        if self._presence is None:
            return
        change = ContactChange(endpoint=str(event.get("EndpointName", "")),
                               uri=str(event.get("URI", "")),
                               status=str(event.get("ContactStatus", "")))
        if change.endpoint and change.status:
            log.info("AMI: contact %s of %s: %s", change.uri, change.endpoint, change.status)
            self._presence.update(change)

    async def _list_contacts(self) -> None:
        """Who is registered now, when this AMI user may ask (PJSIPShowContacts needs
        write=system, which the shipped least-privilege user does not have)."""
        if self._presence is None:
            return
        try:
            contacts = await self._list_action({"Action": "PJSIPShowContacts"})
        except AmiActionFailed as exc:
            if exc.asterisk_message == "No Contacts found":
                return
            if not self._contacts_warned:
                self._contacts_warned = True
                log.info("AMI: cannot list registered phones (%s): presence shows `unknown` "
                         "until each phone registers or unregisters again (ContactStatus "
                         "events); that is expected with the shipped manager.conf",
                         exc.asterisk_message)
            return
        except AmiError as exc:
            log.info("AMI: listing registered phones failed (%s)", exc)
            return
        for entry in contacts:
            if entry.get("Event") == "ContactList" and entry.get("Endpoint"):
                status = "Unreachable" if entry.get("Status") == "Unreachable" else "Created"
                self._presence.update(ContactChange(
                    endpoint=str(entry["Endpoint"]), uri=str(entry.get("Uri", "")),
                    status=status))

    def _fully_booted(self, _manager: object, _event: Mapping[str, str]) -> None:
        log.debug("AMI: Asterisk at %s is fully booted", self.address)



# -- one-off probe for `bridge check` ---------------------------------------------------
# Kept apart from AmiLink: a short session that logs in, asks what this user may do, maybe
# sends one test text, and logs off. It never reconnects and never touches AmiLink's state.


@dataclass(frozen=True)
class AmiProbe:
    """What one short AMI session learned about the bridge's AMI user."""

    version: str  # the AMI protocol version from the banner, e.g. "9.0.0"
    actions: frozenset[str]  # the actions this user may run (ListCommands), lower-cased
    reads_system: bool  # Asterisk sent FullyBooted right after login: read includes system
    # Events the bridge does not need that arrived during the session, e.g. SuccessfulAuth
    # (read includes security: `all` does) after its own login.
    unneeded_events: frozenset[str] = frozenset()
    test_sent: bool | None = None  # None: no test text asked for
    test_error: AmiError | None = None  # why the test text was not queued

    @property
    def may_send(self) -> bool:
        """The user has write=message: MessageSend is among its actions."""
        return "messagesend" in self.actions


# Seconds `bridge check` waits after the login for events the bridge does not need.
_UNNEEDED_WAIT = 1.0
# Headers of the ListCommands response that are not action names.
_RESPONSE_HEADERS = frozenset({"response", "actionid", "message", "content", "eventlist"})


async def probe_ami(settings: AmiSettings, *, timeout: float, test_destination: str | None = None,
                    test_body: str = "", test_from: str | None = None) -> AmiProbe:
    """Log in as the configured user, find out what it may do, optionally send a test text.

    Asterisk tells an AMI client its *write* classes only through ListCommands (every action
    it may run) and its *read* classes only through the events it gets: after a login it
    sends `FullyBooted` exactly when the user has read=system (eventfilters do not apply to
    it). Nothing reveals read=user short of a UserEvent arriving. The whole session is
    bounded by `timeout` seconds; raises AmiUnavailable, AmiLoginRefused or AmiTimeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    address = f"{settings.host}:{settings.port}"
    booted = asyncio.Event()
    lost = asyncio.Event()

    def left(step_limit: float) -> float:
        return max(0.1, min(step_limit, deadline - loop.time()))

    manager = _Manager.for_settings(
        settings, on_lost=lambda _exc: lost.set(),
        forgetable_actions=("ping", "login", "messagesend", "listcommands", "logoff"))
    manager.register_event("FullyBooted", lambda _m, _e: booted.set())
    unneeded: set[str] = set()
    got_unneeded = asyncio.Event()

    def notice(_manager: object, event: Mapping[str, str]) -> None:
        if str(event.get("Event", "")) not in _NEEDED_EVENTS:
            unneeded.add(str(event.get("Event", "")))
            got_unneeded.set()

    manager.register_event("*", notice)

    async def action(fields: dict[str, str]) -> Mapping[str, str]:
        future = manager.send_action(dict(fields))
        try:
            response = await asyncio.wait_for(future, left(settings.action_timeout))
        except TimeoutError:
            if lost.is_set():
                raise AmiUnavailable(f"{address} closed the connection") from None
            raise AmiTimeout(f"Asterisk did not answer {fields['Action']} within "
                             f"{settings.action_timeout:g} s") from None
        return response  # type: ignore[no-any-return]

    try:
        await _connect_and_login(manager, settings, address,
                                 lambda: left(settings.connect_timeout))
        # Asterisk writes FullyBooted before answering anything sent after the login, and
        # panoramisk dispatches events in order, so by the time ListCommands is answered
        # the event has been seen if it was sent.
        commands = await action({"Action": "ListCommands"})
        actions = frozenset(key.lower() for key in commands
                            if key.lower() not in _RESPONSE_HEADERS)
        # Security events (SuccessfulAuth after our own login, for a user with read=all)
        # come through Asterisk's message bus, in no order with the answers: a moment for
        # them, so a loaded PBX does not hide the risk.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(got_unneeded.wait(), left(_UNNEEDED_WAIT))
        protocol = getattr(manager, "protocol", None)
        probe = AmiProbe(version=str(getattr(protocol, "version", "") or ""), actions=actions,
                         reads_system=booted.is_set(), unneeded_events=frozenset(unneeded))
        if test_destination is None:
            return probe
        message = {"Action": "MessageSend", "Destination": test_destination,
                   "Base64Body": base64.b64encode(test_body.encode("utf-8")).decode("ascii")}
        if test_from:
            message["From"] = test_from
        try:
            sent = await action(message)
        except AmiError as exc:
            return dataclasses.replace(probe, test_sent=False, test_error=exc)
        if not getattr(sent, "success", False):
            error = AmiActionFailed("MessageSend", str(sent.get("Message", "")))
            return dataclasses.replace(probe, test_sent=False, test_error=error)
        return dataclasses.replace(probe, test_sent=True)
    finally:
        manager.callbacks.clear()
        manager.patterns.clear()
        manager.close()
