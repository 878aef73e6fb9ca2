"""One call's connection to the OpenAI Realtime API, kept up for the whole call.

The engine (`duplex.openai_realtime`) keeps the conversation's state; this
module keeps a live session under it:

- Session cap (60 min, closed with 1001; no renewal): a new session is
  opened. From `openai_session_cap_s - openai_renew_margin_s` the connection
  waits for a quiet moment (the engine's `quiet()`: no response running,
  caller not speaking, our audio heard to the end, no tool call or answer
  pending); at `cap - openai_renew_force_s` it renews anyway.
- A connection lost mid-call (1001, a network drop) is reconnected too, up to
  `openai_max_reconnects` times per call; a planned renewal does not count.
- Either way the new session gets the same `session.update`, then the
  transcript so far (`history`: a note and the last `openai_reseed_turns`
  turns, the wire module's `reseed_events`). Caller audio sent meanwhile is
  queued (`MAX_BACKLOG_MS`, oldest dropped first) and goes once the session
  is up; control events for the old session are dropped.
- A tool result for a session that is gone goes to the new one as a system
  message (its call id means nothing there): `tool_result`.
- `Metric("provider_reconnect_<reason>")`: `renew`, `renew_forced`,
  `going_away` (1001), `lost`; then `provider_reconnect_backlog_ms` (and
  `provider_reconnect_dropped_ms` if audio was dropped).

The engine hears of each step through callbacks: `on_event` (every server
event), `on_lost` (the old session is gone: settle what it left open),
`on_resumed` (the new session is seeded), `emit` and `fail`. A far end that
closes with 1000 ends the call (`EndCall`). A connection that cannot be
re-established goes to `fail` as `ProviderFailed`, which the fallback wrapper
(`duplex.fallback`) turns into a switch to the pipeline.

`connect(url, headers)` is injected (tests aim it at our own /v1/realtime).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import websockets
from websockets.asyncio.client import ClientConnection

from callagent.config import ProvidersSettings
from callagent.engines.base import EndCall, EngineEvent, Metric
from callagent.engines.providers.openai_realtime_wire import (
    HistoryTurn,
    ServerError,
    ServerEvent,
    SessionConfig,
    WireError,
    encode_function_output,
    encode_message,
    encode_session_update,
    parse_server_event,
    reseed_events,
    tool_result_text,
)

__all__ = ["Connect", "ProviderFailed", "RealtimeConnection", "default_connect", "realtime_url"]

log = logging.getLogger(__name__)

Connect = Callable[[str, dict[str, str]], AbstractAsyncContextManager[ClientConnection]]

MAX_BACKLOG_MS = 15_000.0  # caller audio kept while reconnecting; beyond it the oldest goes
CONNECT_ATTEMPTS = 2  # per reconnect, within connect_timeout_s each
RETRY_DELAY_S = 0.5


class ProviderFailed(RuntimeError):
    """The provider's connection failed or closed abnormally mid-call."""


def default_connect(url: str, headers: dict[str, str]) -> AbstractAsyncContextManager[ClientConnection]:
    return websockets.connect(url, additional_headers=headers, max_size=16 * 1024 * 1024)


def realtime_url(base_url: str, model: str) -> str:
    """The SDK's rule: base URL (http->ws, https->wss) + /realtime + ?model=."""
    base = base_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    sep = "&" if "?" in base else "?"
    return f"{base}/realtime{sep}model={model}"


class RealtimeConnection:
    """Sessions one after another, for one call: see the module docstring."""

    def __init__(
        self,
        settings: ProvidersSettings,
        config: SessionConfig,
        *,
        api_key: str,
        connect: Connect,
        on_event: Callable[[ServerEvent], None],
        quiet: Callable[[], bool],
        on_lost: Callable[[], None],
        on_resumed: Callable[[], None],
        emit: Callable[[EngineEvent], None],
        fail: Callable[[ProviderFailed], None],
    ) -> None:
        self._settings = settings
        self._config = config
        self._key = api_key
        self._connect = connect
        self._on_event = on_event
        self._quiet = quiet
        self._on_lost = on_lost
        self._on_resumed = on_resumed
        self._emit = emit
        self._fail = fail
        # The transcript so far, as the caller heard it: the engine writes it,
        # a new session is seeded from it.
        self.history: deque[HistoryTurn] = deque(maxlen=max(settings.openai_reseed_turns, 1))
        self.session = 0  # generation: +1 per (re)connection
        self.reconnecting = False
        self.reconnects = 0  # unplanned (connection lost); limited per call
        self.renewals = 0  # planned (session cap)
        # (event, audio ms): audio appends have ms > 0, control events 0
        self._out: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        self._sending: tuple[str, float] | None = None
        self._backlog: deque[tuple[str, float]] = deque()
        self._backlog_ms = 0.0
        self._backlog_dropped_ms = 0.0
        self._tick = asyncio.Event()  # state changed: the renewal timer re-checks
        self._task: asyncio.Task[None] | None = None
        self._stack: contextlib.AsyncExitStack | None = None  # the live session's socket
        self._old: list[asyncio.Task[None]] = []  # old sockets closing
        self._closed = False

    async def start(self) -> None:
        """The first session: connected and configured; then kept up until `close()`."""
        ws, stack = await self._open()
        self.session = 1
        self.send(encode_session_update(self._config))
        self._task = asyncio.create_task(self._run(ws, stack))

    def send(self, text: str, *, force: bool = False) -> None:
        """A control event for the live session; dropped while none is (see `_resume`)."""
        if force or not self.reconnecting:
            self._out.put_nowait((text, 0.0))

    def send_audio(self, text: str, ms: float) -> None:
        """An audio append of `ms` of caller audio: kept for the next session while reconnecting."""
        if self.reconnecting:
            self._keep((text, ms))
        else:
            self._out.put_nowait((text, ms))

    def tool_result(self, call_id: str, session: int, name: str, arguments: str,
                    output: str) -> bool:  # fmt: skip
        """A tool's output for the call `call_id` that `session` asked for: to
        that session as the call's output, or, if it is gone, to the new one as
        a system message (or in its re-seed, if it is not up yet). True when
        carried so: the engine owes the new session a `response.create`."""
        text = tool_result_text(name, arguments, output)
        self.history.append(HistoryTurn("system", text))
        if session != self.session:
            self.send(encode_message("system", text))
            return True
        self.send(encode_function_output(call_id, output))
        return False

    def tick(self) -> None:
        """The engine's state changed: a renewal waiting for quiet looks again."""
        self._tick.set()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._stack is not None:  # never served (closed at once after start)
            await self._stack.aclose()
        await asyncio.gather(*self._old, return_exceptions=True)

    # ---- sessions -------------------------------------------------------------------

    async def _open(self) -> tuple[ClientConnection, contextlib.AsyncExitStack]:
        """A connected session: the handshake done and its first server event read."""
        url = realtime_url(self._settings.openai_base_url, self._settings.openai_model)
        headers = {"Authorization": f"Bearer {self._key}"}
        stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                ws = await stack.enter_async_context(self._connect(url, headers))
                first = parse_server_event(await ws.recv())
        except (OSError, TimeoutError, websockets.WebSocketException, WireError) as exc:
            await stack.aclose()
            raise ProviderFailed(f"cannot connect to {url}: {exc}") from exc
        except BaseException:  # cancelled (the call closed meanwhile)
            await stack.aclose()
            raise
        if isinstance(first, ServerError):
            await stack.aclose()
            raise ProviderFailed(f"{url} refused the session: {first.error.code} "
                                 f"{first.error.message}")  # fmt: skip
        self._deliver(first)
        self._stack = stack
        return ws, stack

    async def _run(self, ws: ClientConnection, stack: contextlib.AsyncExitStack) -> None:
        """One session after another until the call ends or a reconnect fails."""
        try:
            while (reason := await self._serve(ws, stack)) and not self._closed:
                planned = reason.startswith("renew")
                if not planned and self.reconnects >= self._settings.openai_max_reconnects:
                    raise ProviderFailed(f"provider connection lost ({reason}) after "
                                         f"{self.reconnects} reconnects")  # fmt: skip
                if planned:
                    self.renewals += 1
                else:
                    self.reconnects += 1
                log.info("openai realtime: reconnecting (%s) after session %d", reason,
                         self.session)  # fmt: skip
                self._emit(Metric(f"provider_reconnect_{reason}", 1.0))
                self._begin_reconnect()
                ws, stack = await self._reopen()
                self._resume()
        except ProviderFailed as exc:
            log.warning("openai realtime: %s", exc)
            self._fail(exc)
        except Exception as exc:  # a bug must still end in the failure path, not a hang
            log.exception("openai realtime: the connection supervisor failed")
            self._fail(ProviderFailed(f"connection supervisor failed: {exc!r}"))

    async def _serve(self, ws: ClientConnection, stack: contextlib.AsyncExitStack) -> str:
        """Run one session; the reason to reconnect, or "" if the call is over."""
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read(ws))
        writer = asyncio.create_task(self._write(ws))
        timer = asyncio.create_task(self._renewal_due(loop.time()))
        try:
            await asyncio.wait((reader, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer, timer):
                task.cancel()
            await asyncio.gather(reader, writer, timer, return_exceptions=True)
            self._old.append(asyncio.create_task(stack.aclose()))  # closes with 1000
        if self._closed:
            return ""
        if not reader.cancelled():  # the connection closed (the timer, if it fired, lost)
            reader.result()  # a bug in the reader surfaces here
            code = ws.close_code
            if code == 1000:  # a normal close: the far end ended the conversation
                self._emit(EndCall(ws.close_reason or "the provider ended the session"))
                return ""
            return "going_away" if code == 1001 else "lost"
        return timer.result()

    async def _reopen(self) -> tuple[ClientConnection, contextlib.AsyncExitStack]:
        failure: ProviderFailed | None = None
        for attempt in range(CONNECT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_DELAY_S)
            try:
                return await self._open()
            except ProviderFailed as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _begin_reconnect(self) -> None:
        """The old session is gone: queue caller audio; the engine settles the rest."""
        self.reconnecting = True
        self.session += 1
        pending = [self._sending] if self._sending is not None else []
        self._sending = None
        while not self._out.empty():
            pending.append(self._out.get_nowait())
        for item in pending:  # unsent audio waits for the new session; control events die
            if item[1] > 0:
                self._keep(item)
        self._on_lost()

    def _resume(self) -> None:
        """The new session is up: settings, the transcript so far, then the queued audio."""
        self.send(encode_session_update(self._config), force=True)
        for event in reseed_events(self.history, last=self._settings.openai_reseed_turns):
            self.send(event, force=True)
        queued_ms = self._backlog_ms
        while self._backlog:
            self._out.put_nowait(self._backlog.popleft())
        self._backlog_ms = 0.0
        self.reconnecting = False
        self._emit(Metric("provider_reconnect_backlog_ms", queued_ms))
        if self._backlog_dropped_ms:
            self._emit(Metric("provider_reconnect_dropped_ms", self._backlog_dropped_ms))
            self._backlog_dropped_ms = 0.0
        self._on_resumed()

    def _keep(self, item: tuple[str, float]) -> None:
        self._backlog.append(item)
        self._backlog_ms += item[1]
        while self._backlog_ms > MAX_BACKLOG_MS and len(self._backlog) > 1:
            _, ms = self._backlog.popleft()
            self._backlog_ms -= ms
            self._backlog_dropped_ms += ms

    async def _renewal_due(self, opened: float) -> str:
        s = self._settings
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, opened + s.openai_session_cap_s - s.openai_renew_margin_s
                                - loop.time()))  # fmt: skip
        force_at = opened + s.openai_session_cap_s - s.openai_renew_force_s
        while not self._quiet():
            left = force_at - loop.time()
            if left <= 0:
                return "renew_forced"
            self._tick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), left)
        return "renew"

    # ---- socket tasks ---------------------------------------------------------------

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            self._sending = await self._out.get()
            await ws.send(self._sending[0])
            self._sending = None

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                try:
                    event = parse_server_event(message)
                except WireError as exc:
                    log.warning("openai realtime: bad server event: %s", exc)
                    continue
                self._deliver(event)
        except websockets.ConnectionClosed:
            pass

    def _deliver(self, event: ServerEvent) -> None:
        self._tick.set()
        self._on_event(event)
