"""A small async-friendly wrapper over ``twilio.rest.Client`` for outbound calls.

The SDK blocks (``requests``): every call runs in a worker thread. ``base_url`` points the
SDK elsewhere (``callagent.sim.twilio_rest`` in tests). Vendor errors are re-raised as ours:
``TwilioRestError`` (Twilio answered with an error) or ``TwilioUnavailable`` (no answer: a
create may or may not have happened; reconcile before dialing again). ``timeout_s`` bounds
each HTTP request: the dialer's lease must be longer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

__all__ = [
    "DEFAULT_STATUS_EVENTS",
    "DeadlinePassed",
    "FoundCall",
    "PlacedCall",
    "TwilioRest",
    "TwilioRestError",
    "TwilioUnavailable",
]

_T = TypeVar("_T")
# The SDK logs every request's parameters (phone numbers) at INFO: keep warnings only.
_SDK_LOG = logging.getLogger("callagent.telephony.twilio.sdk")
_SDK_LOG.setLevel(logging.WARNING)

DEFAULT_STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
# "Call is not in-progress. Cannot redirect." / not found: the call already ended.
_ALREADY_ENDED_CODES: Final = frozenset({21220, 20404})


class TwilioRestError(Exception):
    """Twilio refused a request (HTTP status and Twilio error code kept)."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"Twilio {status} (code {code}): {message}")
        self.status, self.code, self.message = status, code, message


class TwilioUnavailable(Exception):
    """No answer from Twilio (network, timeout): the request may or may not have run."""


class DeadlinePassed(TwilioUnavailable):
    """The request was not sent: its deadline had passed (nothing happened at Twilio)."""


@dataclass(frozen=True, slots=True)
class PlacedCall:
    sid: str
    status: str


@dataclass(frozen=True, slots=True)
class FoundCall:
    sid: str
    status: str
    to: str
    from_: str
    date_created: datetime | None
    answered_by: str | None = None
    duration_s: int | None = None


class TwilioRest:
    """Owns a pooled HTTP session: ``close()`` it (or use ``async with``)."""

    def __init__(
        self, account_sid: str, auth_token: str, *, base_url: str = "https://api.twilio.com",
        timeout_s: float = 10.0,
    ) -> None:
        self._http = TwilioHttpClient(timeout=timeout_s, logger=_SDK_LOG)
        self._client = Client(account_sid, auth_token, http_client=self._http, environment={})
        self._client.api.base_url = base_url.rstrip("/")

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        session = getattr(self._http, "session", None)
        if session is not None:
            session.close()

    async def place_call(
        self, *, to: str, from_: str, url: str, status_callback: str,
        status_callback_events: Sequence[str] = DEFAULT_STATUS_EVENTS,
        machine_detection: str | None = "Enable", async_amd: bool = True,
        async_amd_status_callback: str | None = None, timeout: int = 30,
        send_before: float | None = None,
    ) -> PlacedCall:
        """``send_before`` (a ``time.time()`` instant): the create is sent only before it,
        checked in the worker thread right before the request (else ``DeadlinePassed``)."""
        kwargs: dict[str, Any] = {
            "to": to, "from_": from_, "url": url, "status_callback": status_callback,
            "status_callback_event": list(status_callback_events),
            "status_callback_method": "POST", "timeout": timeout,
        }
        if machine_detection:
            kwargs["machine_detection"] = machine_detection
            kwargs["async_amd"] = "true" if async_amd else "false"
            if async_amd_status_callback:
                kwargs["async_amd_status_callback"] = async_amd_status_callback

        def create() -> Any:
            if send_before is not None and time.time() >= send_before:
                raise DeadlinePassed("the create's deadline passed before it was sent")
            return self._client.calls.create(**kwargs)

        call = await self._run(create)
        return PlacedCall(sid=str(call.sid), status=str(call.status))

    async def find_calls(
        self, *, to: str, from_: str, created_after: datetime,
    ) -> list[FoundCall]:
        """Calls to ``to`` from ``from_`` created at or after ``created_after``."""

        def list_calls() -> list[FoundCall]:
            found = []
            for c in self._client.calls.list(to=to, from_=from_, limit=50):
                created = c.date_created
                if created is not None and created < created_after:
                    continue
                found.append(FoundCall(str(c.sid), str(c.status), str(c.to), str(c._from),
                                       created))
            return found

        return await self._run(list_calls)

    async def fetch_call(self, call_sid: str) -> FoundCall:
        """The call's current state (``TwilioRestError`` 404 if Twilio has no such call)."""

        def fetch() -> FoundCall:
            c = self._client.calls(call_sid).fetch()
            duration = str(c.duration) if c.duration is not None else ""
            return FoundCall(str(c.sid), str(c.status), str(c.to), str(c._from), c.date_created,
                             c.answered_by, int(duration) if duration.isdigit() else None)

        return await self._run(fetch)

    async def hang_up(self, call_sid: str) -> None:
        """End the call; a call that already ended (or never existed) counts as success."""
        try:
            await self._run(lambda: self._client.calls(call_sid).update(status="completed"))
        except TwilioRestError as exc:
            if exc.status == 404 or exc.code in _ALREADY_ENDED_CODES:
                return
            raise

    async def update_twiml(self, call_sid: str, twiml: str) -> None:
        """Replace a live call's TwiML (a transfer: ``<Dial>``); ends its media stream.
        ``TwilioRestError`` when Twilio refuses (e.g. the call already ended)."""
        await self._run(lambda: self._client.calls(call_sid).update(twiml=twiml))

    async def _run(self, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except TwilioRestException as exc:
            raise TwilioRestError(int(exc.status), exc.code, str(exc.msg)) from None
        except (requests.RequestException, TwilioException) as exc:
            raise TwilioUnavailable(str(exc)) from exc
