"""A local fake of Twilio's REST API for calls, speaking the real wire format.

``FakeTwilioRest`` serves (stdlib ``ThreadingHTTPServer``, in a thread):

* ``POST /2010-04-01/Accounts/{sid}/Calls.json``: form fields ``To``, ``From``, ``Url``,
  ``StatusCallback``, repeated ``StatusCallbackEvent``, ``MachineDetection``, ``AsyncAmd``,
  ``Timeout``...; answers ``201`` with Twilio's JSON call resource (``sid`` = ``CA`` + 32
  hex). Every create is recorded (``creates``) *before* the answer is sent, so a client that
  dies while waiting still left a call behind, as with the real Twilio.
* ``GET .../Calls.json?To=&From=``: the call list (newest first), for reconciliation.
* ``GET|POST .../Calls/{sid}.json``: fetch; ``Status=completed|canceled`` hangs up;
  ``Twiml=...`` on a call in progress replaces what it runs (kept in ``updates``; the call
  ends ``message_s`` later, as after a ``<Say>`` and ``<Hangup/>``).

Each call ends after a random ``duration_s`` range with the number's outcome
(``Outcome``: human, machine, busy, no-answer, failed). A human or machine answers 30 % of
the way through: the ``initiated``, ``ringing`` and ``in-progress`` status callbacks go
out then; with ``post_callbacks`` the call's ``Url`` is fetched (a signed POST, as Twilio
asks for TwiML; the answer is kept in ``voice_twiml``) and, when the create asked for
``AsyncAmd=true`` with an ``AsyncAmdStatusCallback``, the verdict is POSTed there (signed)
a further 30 % in: ``CallSid``, ``AccountSid``, ``AnsweredBy`` (``human``; a machine is
``machine_start`` under ``MachineDetection=Enable``, ``machine_end_beep`` under
``DetectMessageEnd``) and ``MachineDetectionDuration``, never ``CallStatus``. At the end
comes the final status callback (``completed`` with ``CallDuration``, and ``AnsweredBy``
when ``answered_by_in_status``; or the failure status). Status callbacks carry
``SequenceNumber`` and go to ``sink`` (a function, called in the fake's scheduler thread)
and, with ``post_callbacks``, as a POST signed with ``auth_token`` to the ``StatusCallback``
URL. A call counts as in progress from
its create until it ends; ``max_in_progress`` keeps the peak per ``campaign`` (the
``campaign`` query parameter of its ``Url``), so tests can check the dialers' cap.
"""

from __future__ import annotations

import enum
import heapq
import json
import random
import re
import secrets
import threading
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twilio.request_validator import RequestValidator

__all__ = ["CreatedCall", "FakeTwilioRest", "Outcome", "StatusSink"]

_CALLS = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Calls/(CA[0-9a-f]{32})\.json$")

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

StatusSink = Callable[[Mapping[str, str]], None]


class Outcome(enum.Enum):
    HUMAN = "human"
    MACHINE = "machine"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"


@dataclass(slots=True)
class CreatedCall:
    sid: str
    form: dict[str, list[str]]
    created_at: datetime
    status: str = "queued"
    ended_at: datetime | None = None
    answered_by: str | None = None
    duration_s: int = 0
    answered_at: datetime | None = None
    voice_twiml: str = ""                       # what our /twilio/voice answered
    amd_posted: str = ""                        # the AnsweredBy posted to the AMD callback
    updates: list[dict[str, list[str]]] = field(default_factory=list)
    ended_by: str = ""                          # "timer" or "update"
    events: int = 0                             # status callbacks sent so far

    def one(self, name: str) -> str:
        values = self.form.get(name, [""])
        return values[0]

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.one("Url")).query).items()}

    @property
    def campaign(self) -> str:
        return self.query.get("campaign", "")

    @property
    def idempotency_key(self) -> str:
        return self.query.get("attempt", "")


@dataclass
class FakeTwilioRest:
    auth_token: str = "fake-auth-token"
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    duration_s: tuple[float, float] = (0.05, 0.2)
    create_delay_s: float = 0.0
    rejects: frozenset[str] = frozenset()       # numbers refused with 400 / 21211
    sink: StatusSink | None = None
    post_callbacks: bool = False
    answered_by_in_status: bool = True
    message_s: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        self.creates: list[CreatedCall] = []
        self.by_sid: dict[str, CreatedCall] = {}
        self.in_progress: Counter[str] = Counter()
        self.max_in_progress: Counter[str] = Counter()
        self.callback_errors: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._timers: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self._closing = threading.Event()
        self._rng = random.Random(self.seed)
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeTwilioRest:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="fake-twilio-http"),
            threading.Thread(target=self._scheduler, name="fake-twilio-calls"),
        ]
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self._closing.set()
        with self._wake:
            self._wake.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> FakeTwilioRest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- assertions helpers -----------------------------------------------------------------

    def creates_per_key(self) -> Counter[str]:
        with self._lock:
            return Counter(c.idempotency_key for c in self.creates)

    def active(self) -> int:
        with self._lock:
            return sum(self.in_progress.values())

    # --- the calls ---------------------------------------------------------------------------

    def create(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        to = form.get("To", [""])[0]
        if not to or not form.get("From") or not (form.get("Url") or form.get("Twiml")):
            return 400, _error(400, 21201, "No 'To', 'From' or 'Url' number is specified")
        if to in self.rejects:
            return 400, _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        now = datetime.now(UTC)
        call = CreatedCall(sid="CA" + secrets.token_hex(16), form=form, created_at=now)
        with self._wake:
            self.creates.append(call)
            self.by_sid[call.sid] = call
            campaign = call.campaign
            self.in_progress[campaign] += 1
            self.max_in_progress[campaign] = max(
                self.max_in_progress[campaign], self.in_progress[campaign])
            low, high = self.duration_s
            start = now.timestamp()
            due = start + self._rng.uniform(low, high)
            if self.outcomes.get(to, Outcome.HUMAN) in (Outcome.HUMAN, Outcome.MACHINE):
                self._push(start + 0.3 * (due - start), call.sid, "answer")
                if call.one("AsyncAmd") == "true" and call.one("AsyncAmdStatusCallback"):
                    self._push(start + 0.51 * (due - start), call.sid, "amd")
            self._push(due, call.sid, "end")
        if self.create_delay_s:
            self._closing.wait(self.create_delay_s)
        return 201, self.resource(call)

    def list_calls(self, query: dict[str, list[str]]) -> dict[str, Any]:
        to, from_ = query.get("To", [None])[0], query.get("From", [None])[0]
        with self._lock:
            calls = [c for c in reversed(self.creates)
                     if (to is None or c.one("To") == to) and (from_ is None or c.one("From") == from_)]
            items = [self.resource(c) for c in calls]
        return {"calls": items, "first_page_uri": "", "next_page_uri": None,
                "previous_page_uri": None, "page": 0, "page_size": len(items), "start": 0,
                "end": max(len(items) - 1, 0), "uri": ""}

    def _push(self, due: float, sid: str, kind: str) -> None:
        """Schedule ``kind`` for a call (hold ``_lock``)."""
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, sid, kind))
        self._wake.notify()

    def update(self, sid: str, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            call = self.by_sid.get(sid)
            if call is not None:
                call.updates.append(form)
        if call is None:
            return 404, _error(404, 20404, f"The requested resource {sid} was not found")
        status = form.get("Status", [""])[0]
        if status in ("completed", "canceled"):
            self._end(call, status if call.status in ("queued", "ringing") else "completed",
                      by="update")
        elif form.get("Twiml") or form.get("Url"):
            with self._wake:
                if call.ended_at is not None or call.status != "in-progress":
                    return 400, _error(400, 21220, "Call is not in-progress. Cannot redirect.")
                self._push(datetime.now(UTC).timestamp() + self.message_s, sid, "hangup")
        return 200, self.resource(call)

    def resource(self, call: CreatedCall) -> dict[str, Any]:
        account = "AC" + "0" * 32
        return {
            "sid": call.sid, "account_sid": account, "to": call.one("To"),
            "from": call.one("From"), "status": call.status, "direction": "outbound-api",
            "api_version": "2010-04-01", "answered_by": call.answered_by,
            "date_created": format_datetime(call.created_at, usegmt=True),
            "date_updated": format_datetime(call.ended_at or call.created_at, usegmt=True),
            "start_time": format_datetime(call.created_at, usegmt=True),
            "end_time": format_datetime(call.ended_at, usegmt=True) if call.ended_at else None,
            "duration": str(call.duration_s) if call.ended_at else None,
            "caller_name": None, "parent_call_sid": None, "price": None,
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{call.sid}.json",
        }

    def _scheduler(self) -> None:
        while not self._closing.is_set():
            with self._wake:
                now = datetime.now(UTC).timestamp()
                if not self._timers or self._timers[0][0] > now:
                    delay = (self._timers[0][0] - now) if self._timers else 0.5
                    self._wake.wait(min(delay, 0.5))
                    continue
                _, _, sid, kind = heapq.heappop(self._timers)
                call = self.by_sid[sid]
            outcome = self.outcomes.get(call.one("To"), Outcome.HUMAN)
            if kind == "answer":
                self._answer(call)
            elif kind == "amd":
                self._post_amd(call, outcome)
            elif kind == "hangup":
                self._end(call, "completed", by="update")
            else:
                self._end(call, outcome)

    def _verdict(self, call: CreatedCall, outcome: Outcome) -> str:
        if outcome is Outcome.HUMAN:
            return "human"
        return "machine_end_beep" if call.one("MachineDetection") == "DetectMessageEnd" \
            else "machine_start"

    def _answer(self, call: CreatedCall) -> None:
        with self._lock:
            if call.ended_at is not None:
                return
            call.status, call.answered_at = "in-progress", datetime.now(UTC)
        for status in ("initiated", "ringing", "in-progress"):
            self._status_callback(call, status)
        if self.post_callbacks and call.one("Url"):
            params = self._call_params(call, "in-progress")
            call.voice_twiml = self._post(call, call.one("Url"), params)

    def _post_amd(self, call: CreatedCall, outcome: Outcome) -> None:
        with self._lock:
            if call.ended_at is not None or call.status != "in-progress":
                return
            call.answered_by = self._verdict(call, outcome)
            call.amd_posted = call.answered_by
        assert call.answered_at is not None
        took = datetime.now(UTC) - call.answered_at
        params = {"CallSid": call.sid, "AccountSid": "AC" + "0" * 32,
                  "AnsweredBy": call.answered_by,
                  "MachineDetectionDuration": str(round(took.total_seconds() * 1000))}
        if self.post_callbacks:
            self._post(call, call.one("AsyncAmdStatusCallback"), params)

    def _end(self, call: CreatedCall, how: Outcome | str, *, by: str = "timer") -> None:
        """End a call once (a hang-up may race the timer): in-progress first, then callbacks."""
        with self._lock:
            if call.ended_at is not None:
                return
            now = datetime.now(UTC)
            call.ended_at, call.ended_by = now, by
            answered = how in (Outcome.HUMAN, Outcome.MACHINE) or (
                how == "completed" and call.answered_at is not None)
            if how == "completed" and call.answered_at is None:
                how = "canceled"        # hung up while it rang
            call.status = "completed" if answered else (
                how.value if isinstance(how, Outcome) else how)
            if call.answered_by is None and answered:
                call.answered_by = self._verdict(call, how) if isinstance(how, Outcome) \
                    else None
            start = call.answered_at or call.created_at
            call.duration_s = max(1, round((now - start).total_seconds())) if answered else 0
            self.in_progress[call.campaign] -= 1
            first = call.events == 0
        if first:
            for status in ("initiated", "ringing"):
                self._status_callback(call, status)
        self._status_callback(call, call.status, final=True)

    def _call_params(self, call: CreatedCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.sid, "AccountSid": "AC" + "0" * 32, "From": call.one("From"),
            "To": call.one("To"), "CallStatus": status, "ApiVersion": "2010-04-01",
            "Direction": "outbound-api",
        }

    def _status_callback(self, call: CreatedCall, status: str, *, final: bool = False) -> None:
        with self._lock:
            seq = call.events
            call.events += 1
        params = self._call_params(call, status) | {
            "SequenceNumber": str(seq),
            "Timestamp": format_datetime(datetime.now(UTC), usegmt=True),
            "CallbackSource": "call-progress-events",
        }
        if final:
            params["CallDuration"] = str(call.duration_s)
            if call.answered_by and self.answered_by_in_status:
                params["AnsweredBy"] = call.answered_by
        try:
            if self.sink is not None:
                self.sink(params)
        except Exception as exc:  # recorded for the test: a callback failing is not fatal
            self.callback_errors.append(f"{call.sid}: {exc!r}")
        url = call.one("StatusCallback")
        if self.post_callbacks and url:
            self._post(call, url, params)

    def _post(self, call: CreatedCall, url: str, params: Mapping[str, str]) -> str:
        """POST ``params`` to ``url`` signed like Twilio; returns the body ("" on failure)."""
        try:
            if urlsplit(url).hostname not in _LOOPBACK:
                raise ValueError("the fake posts to loopback addresses only")
            signature = RequestValidator(self.auth_token).compute_signature(url, dict(params))
            req = urllib.request.Request(
                url, data=urlencode(params).encode(), method="POST",
                headers={"X-Twilio-Signature": signature,
                         "Content-Type": "application/x-www-form-urlencoded"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                body: bytes = resp.read()
            return body.decode()
        except Exception as exc:  # recorded for the test: a callback failing is not fatal
            self.callback_errors.append(f"{call.sid}: {url}: {exc!r}")
            return ""


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeTwilioRest
    protocol_version = "HTTP/1.1"
    # one segment per response, sent at once (no Nagle / delayed-ACK stalls on keep-alive)
    disable_nagle_algorithm = True
    wbufsize = 65536

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _form(self) -> dict[str, list[str]]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        return defaultdict(list, parse_qs(body, keep_blank_values=True))

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        form = dict(self._form())
        if _CALLS.match(path):
            self._send(*self.owner.create(form))
        elif m := _CALL.match(path):
            self._send(*self.owner.update(m.group(2), form))
        else:
            self._send(404, _error(404, 20404, "not found"))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if _CALLS.match(parts.path):
            self._send(200, self.owner.list_calls(parse_qs(parts.query)))
        elif m := _CALL.match(parts.path):
            with self.owner._lock:
                call = self.owner.by_sid.get(m.group(2))
            if call is None:
                self._send(404, _error(404, 20404, "not found"))
            else:
                self._send(200, self.owner.resource(call))
        else:
            self._send(404, _error(404, 20404, "not found"))
