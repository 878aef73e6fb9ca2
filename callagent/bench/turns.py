"""Turn-taking benchmark: scripted callers against the real service, scored on what they heard.

``scripts/bench turns`` starts ``callagent serve`` as a process of its own
(SQLite in a temporary directory) with ``--profile`` (default
customer_service: the embedded pipeline) as the agent, waits until its
models have loaded, and plays scripted caller scenarios through the Twilio
Media Streams protocol (signed webhook and WebSocket upgrade, real-time
20 ms mu-law frames, marks echoed, ``clear`` honoured: the simulator's
`CallerStream`). The callers react to what they hear, on
the playout clock: they answer once the agent has been quiet for a moment,
or talk over it while it speaks. Scoring uses only what the caller said and
heard, so any engine is measured the same way: by default the scenarios run
against the modular pipeline, then against the duplex engine (local backend),
each on a server of its own, and the output ends with the two side by side
(``--engine pipeline`` or ``--engine duplex`` runs one).

Per scenario and overall:

- turn-taking latency: end of the caller's speech -> first agent audio heard
  after it (p50 / p95);
- barge-in stop latency: onset of the caller's speech over the agent -> the
  last agent audio heard (p50 / p95);
- backchannels ("uh-huh", "yes") over the agent that stopped it: the agent's
  audio heard at their onset has a gap of more than 0.5 s before the caller's
  next step (Full-Duplex-Bench v1.5 merges a model's gaps of up to 0.5 s into
  one utterance: a shorter pause that picks up again is no stop); also how
  many were cut (a ``clear`` within 1.5 s of onset) and picked up within
  0.5 s, and how many of the stopped ones resumed later;
- mid-sentence pauses (0.4-1.0 s, spliced into the caller's sentence at a
  word gap) during which agent audio was heard: a reply that came too soon;
- the server's CPU-seconds per call-second.

Optionally ``--echo-db -25`` sends the agent's own audio back into the
caller's channel (200 ms late, that many dB down), as a phone line does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets

from callagent.audio.codec import pcm_to_ulaw
from callagent.audio.pcm import Samples
from callagent.audio.wavfile import read_wav
from callagent.bench._server import TOKEN, serve, settle
from callagent.bench.media import machine
from callagent.sim.caller import parse_stream_twiml, post_signed, stream_socket
from callagent.sim.playout import CallerPlayout
from callagent.sim.stream import FRAME, RATE, CallerStream, Frame
from callagent.store.db import PROJECT_ROOT
from callagent.telephony.twilio.peer import TwilioPeer

__all__ = ["SCENARIOS", "Step", "main", "score"]

AUDIO = PROJECT_ROOT.parent / "shared" / "audio"
QUIET_S = 1.2  # the agent's turn is over once nothing has played for this long
STOP_GAP_S = 0.5  # a longer gap in the agent's audio over a backchannel is a stop
TARGETS = {"turn_p50": 0.35, "stop_p95": 0.25, "wrong_stops": 0.05, "wrong_replies": 0.05}


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the caller says.

    kind "answer": once the agent has been quiet for QUIET_S after speaking;
    "over": while the agent speaks, after `after_heard_s` of its audio in
    this call (barge-in or backchannel, by `role`). `pause_s` splices a
    silence into the clip at its first word gap (a mid-sentence pause).
    """

    kind: str  # "answer" | "over"
    clip: str
    role: str = "turn"  # "turn" | "barge" | "backchannel"
    after_heard_s: float = 0.0
    pause_s: float = 0.0


SCENARIOS: dict[str, list[Step]] = {
    "order_status": [Step("answer", "01_order_status"), Step("answer", "02_account_number")],
    "barge_in_menu": [Step("over", "05_barge_in_change_address", "barge", after_heard_s=8.0)],
    "barge_in_reply": [Step("answer", "01_order_status"),
                       Step("over", "06_human_please", "barge", after_heard_s=13.0)],
    "backchannel_uh_huh": [Step("over", "03_uh_huh", "backchannel", after_heard_s=8.0),
                           Step("answer", "01_order_status")],
    "backchannel_yes": [Step("over", "04_yes", "backchannel", after_heard_s=8.5),
                        Step("answer", "01_order_status")],
    "pause_0.4": [Step("answer", "01_order_status", pause_s=0.4)],
    "pause_0.7": [Step("answer", "02_account_number", pause_s=0.7)],
    "pause_1.0": [Step("answer", "01_order_status", pause_s=1.0)],
}  # fmt: skip


# ---- caller audio ----------------------------------------------------------------


def _loud(samples: Samples) -> np.ndarray:
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    return np.asarray(np.sqrt((frames**2).mean(axis=1)) > 330.0)  # -40 dBFS


def with_pause(samples: Samples, pause_s: float) -> tuple[Samples, float]:
    """The clip with `pause_s` of silence spliced into its first gap between words
    (>= 60 ms below -40 dBFS after the first 300 ms of speech); returns the
    audio and where the pause starts (s)."""
    loud = _loud(samples)
    first = int(np.argmax(loud))
    for i in range(first + 15, len(loud) - 3):
        if not loud[i] and not loud[i + 1] and not loud[i + 2] and loud[i + 3 :].any():
            cut = (i + 1) * FRAME
            gap = np.zeros(int(pause_s * RATE), np.int16)
            return np.concatenate([samples[:cut], gap, samples[cut:]]), cut / RATE
    raise ValueError("no gap between words to put a pause in")


def speech_span(samples: Samples) -> tuple[float, float]:
    loud = _loud(samples)
    idx = np.flatnonzero(loud)
    return idx[0] * FRAME / RATE, (idx[-1] + 1) * FRAME / RATE


# ---- one scripted call -------------------------------------------------------------


@dataclass
class Said:
    step: Step
    start: float  # call clock (s) of the first frame of the clip
    onset: float
    end: float
    pause: tuple[float, float] | None = None


@dataclass
class CallLog:
    scenario: str
    said: list[Said] = field(default_factory=list)
    heard: list[tuple[float, float]] = field(default_factory=list)  # agent audio intervals
    clears: list[float] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""


def _heard_intervals(playout: CallerPlayout) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    for seg in playout.segments:
        loud = np.flatnonzero(np.abs(seg.samples.astype(np.int32)) > 300)
        if not len(loud):
            continue
        a, b = seg.start + loud[0] / RATE, seg.start + (loud[-1] + 1) / RATE
        if spans and a <= spans[-1][1] + 0.25:  # gaps inside speech are not turns
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        else:
            spans.append((a, b))
    return spans


def _playing(playout: CallerPlayout, t: float) -> bool:
    return any(s.start <= t < s.end and np.abs(s.samples).max(initial=0) > 300 for s in playout.segments)


def _heard_s(playout: CallerPlayout, t: float) -> float:
    return sum(max(0.0, min(s.end, t) - s.start) for s in playout.segments)


async def run_scenario(base: str, name: str, steps: Sequence[Step], echo_db: float | None,
                       limit_s: float = 60.0) -> CallLog:  # fmt: skip
    log = CallLog(name)
    call_sid, stream_sid = "CA" + secrets.token_hex(16), "MZ" + secrets.token_hex(16)
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15005550006",
            "To": "+15005550001", "CallStatus": "ringing", "Direction": "inbound",
            "ApiVersion": "2010-04-01"}  # fmt: skip
    async with httpx.AsyncClient(timeout=10.0) as http:
        resp = await post_signed(http, base, base, TOKEN, "/twilio/voice", form)
        if resp.status_code != 200:
            log.error = f"voice webhook answered {resp.status_code}"
            return log
        url, params = parse_stream_twiml(resp.text)
        ws_url, headers = stream_socket(base, url, TOKEN)
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            await _converse(ws, log, steps, echo_db, limit_s, call_sid, stream_sid, params)
        await post_signed(http, base, base, TOKEN, "/twilio/status",
                          {**form, "CallStatus": "completed", "SequenceNumber": "3"})
    return log


async def _converse(ws: websockets.ClientConnection, log: CallLog, steps: Sequence[Step],
                    echo_db: float | None, limit_s: float, call_sid: str, stream_sid: str,
                    params: dict[str, str]) -> None:  # fmt: skip
    peer = TwilioPeer(stream_sid=stream_sid, call_sid=call_sid, account_sid="AC" + "0" * 32)
    playout = CallerPlayout()
    caller = _Scripted(playout, log, steps, echo_db, limit_s)
    stream = CallerStream(ws, peer, playout, params)
    log.clears = stream.clears
    try:
        async with stream:
            try:
                await stream.speak(caller)
            finally:  # what was heard by the end of the caller's side, before the close
                log.seconds = caller.seconds
                log.heard = _heard_intervals(playout)
    finally:
        if caller.pending:
            log.error = f"{len(caller.pending)} step(s) never came up (the agent did not speak or stop)"


class _Scripted:
    """The scripted caller's voice: each step when its moment comes, on the playout clock."""

    def __init__(self, playout: CallerPlayout, log: CallLog, steps: Sequence[Step],
                 echo_db: float | None, limit_s: float) -> None:  # fmt: skip
        self._playout, self._log, self._echo_db, self._limit_s = playout, log, echo_db, limit_s
        self.pending = list(steps)
        self._speaking: Samples | None = None
        self._pos = 0
        self._last_agent = 0.0
        self._heard_any = False
        self._done_at: float | None = None
        self._n = 0  # frames said
        self._finished = False  # the last step is over and the agent has gone quiet

    @property
    def seconds(self) -> float:
        """The call's length: up to the frame after which the caller hung up."""
        return (self._n - self._finished) * FRAME / RATE

    @property
    def done(self) -> bool:
        return self._finished or self._n * FRAME / RATE >= self._limit_s

    def frame(self, at: float, now: float) -> Frame:
        playout, t = self._playout, at
        playing = _playing(playout, t)
        if playing:
            self._last_agent, self._heard_any = t, True
        if self._speaking is None and self.pending:
            step = self.pending[0]
            ready = (self._heard_any and not playing and t - self._last_agent >= QUIET_S) \
                if step.kind == "answer" else (playing and _heard_s(playout, t) >= step.after_heard_s)  # fmt: skip
            if ready:
                self.pending.pop(0)
                clip = read_wav(AUDIO / f"{step.clip}.wav").samples
                pause = None
                if step.pause_s:
                    clip, pause_at = with_pause(clip, step.pause_s)
                    pause = (t + pause_at, t + pause_at + step.pause_s)
                onset, end = speech_span(clip)
                self._log.said.append(Said(step, t, t + onset, t + end, pause))
                self._speaking, self._pos = clip, 0
        frame = np.zeros(FRAME)
        if self._speaking is not None:
            part = self._speaking[self._pos : self._pos + FRAME]
            frame[: len(part)] += part
            self._pos += FRAME
            if self._pos >= len(self._speaking):
                self._speaking = None
        if self._echo_db is not None:
            frame += _echo(playout, t - 0.2) * 10 ** (self._echo_db / 20)
        if not self.pending and self._speaking is None and self._done_at is None:
            self._done_at = t
        self._finished = (self._done_at is not None and t - self._done_at > 8.0 and not playing
                          and t - self._last_agent > 2.0)  # fmt: skip
        self._n += 1
        return Frame(pcm_to_ulaw(np.clip(frame, -32768, 32767).astype(np.int16)))


def _echo(playout: CallerPlayout, t: float) -> np.ndarray:
    out = np.zeros(FRAME)
    for seg in playout.segments:
        a = int(round((t - seg.start) * RATE))
        if a + FRAME <= 0 or a >= len(seg.samples):
            continue
        lo, hi = max(0, a), min(len(seg.samples), a + FRAME)
        out[lo - a : hi - a] = seg.samples[lo:hi]
    return out


# ---- scoring -------------------------------------------------------------------


@dataclass
class Scores:
    turn_latency_s: list[float] = field(default_factory=list)
    stop_latency_s: list[float] = field(default_factory=list)
    not_stopped: int = 0
    backchannels: int = 0
    wrong_stops: int = 0
    paused: int = 0  # cut by a clear, but picked up within STOP_GAP_S
    resumed: int = 0
    pauses: int = 0
    wrong_replies: int = 0
    missing_replies: int = 0

    def add(self, other: Scores) -> None:
        for name, value in asdict(other).items():
            mine = getattr(self, name)
            setattr(self, name, mine + value)


def score(log: CallLog) -> Scores:
    s = Scores()
    for said in log.said:
        role = said.step.role
        if role == "turn":
            after = [a for a, _ in log.heard if a >= said.end - 0.05]
            if said.pause is not None:
                s.pauses += 1
                p0, _ = said.pause
                s.wrong_replies += any(a < said.end and b > p0 for a, b in log.heard)
            if after:
                s.turn_latency_s.append(max(0.0, after[0] - said.end))
            else:
                s.missing_replies += 1
        elif role == "barge":
            # Agent audio around the onset (it may sit in a gap between two
            # sentences): what was playing, or began within 0.5 s after it.
            spans = [(a, b) for a, b in log.heard if a < said.onset + 0.5 and b > said.onset - 0.3]
            if not spans:
                continue  # the agent was not audible at the onset
            end = max(b for _, b in spans)
            if end >= said.end:
                s.not_stopped += 1
            else:
                s.stop_latency_s.append(max(0.0, end - said.onset))  # cut before it was heard: 0
        else:
            runs = _merge(log.heard, STOP_GAP_S)
            over = [(a, b) for a, b in runs if a <= said.onset + 0.05 and b >= said.onset - 0.05]
            if not over:
                continue  # the agent was not audible at the onset
            s.backchannels += 1
            cut = any(said.onset - 0.05 <= c <= said.onset + 1.5 for c in log.clears)
            stopped = bool(over[0][1] < said.end + 0.05)  # its speech ran out during the backchannel
            s.wrong_stops += stopped
            s.paused += cut and not stopped
            if stopped:  # the agent picked up again before the caller's next step
                s.resumed += any(said.end < a < said.end + 3.0 for a, _ in log.heard)
    return s


def _merge(spans: Sequence[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    """`spans` (sorted) with gaps of at most `gap_s` closed."""
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and a - out[-1][1] <= gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _pct(values: Sequence[float], q: float) -> str:
    return f"{np.percentile(values, q):.3f}" if values else "-"


def render(title: str, s: Scores) -> str:
    def share(k: int, n: int) -> str:
        return f"{k}/{n}" + (f" ({100 * k / n:.0f} %)" if n else "")

    return (
        f"{title:<22} turn-taking s p50 {_pct(s.turn_latency_s, 50)} p95 {_pct(s.turn_latency_s, 95)} "
        f"(n={len(s.turn_latency_s)}, no reply {s.missing_replies}) | "
        f"barge-in stop s p50 {_pct(s.stop_latency_s, 50)} p95 {_pct(s.stop_latency_s, 95)} "
        f"(n={len(s.stop_latency_s)}, never stopped {s.not_stopped}) | "
        f"backchannel stops {share(s.wrong_stops, s.backchannels)}, resumed {s.resumed}, "
        f"paused <= {STOP_GAP_S} s {s.paused} | "
        f"replies in pauses {share(s.wrong_replies, s.pauses)}"
    )


# ---- the run --------------------------------------------------------------------


def _profile_for(engine: str, profile: str | None) -> str:
    if profile:
        return profile
    if engine == "pipeline":
        return "customer_service"
    from callagent.agents.profile import load_profiles

    for p in load_profiles(PROJECT_ROOT / "config" / "agents").values():
        if p.engine == engine and p.direction != "outbound":
            return p.name
    raise SystemExit(f"scripts/bench turns: no inbound profile uses engine {engine!r}; pass --profile")


def run_engine(engine: str, profile: str, names: Sequence[str], repeat: int,
               echo_db: float | None) -> tuple[list[CallLog], float]:  # fmt: skip
    """The scenarios against a fresh server of one engine: the call logs and its CPU seconds."""
    logs: list[CallLog] = []
    env = {"CALLAGENT_AGENT_DEFAULT_PROFILE": profile, "CALLAGENT_AGENT_ENGINE": engine}
    with tempfile.TemporaryDirectory(prefix="callagent-turns-") as tmp, serve(Path(tmp), env) as server:
        base = server.base_url
        print(f"bench turns: {engine}: server pid {server.pid}, profile {profile}; waiting for its models",
              file=sys.stderr, flush=True)  # fmt: skip
        # A first call makes a lazily loading engine load; then wait for quiet.
        asyncio.run(run_scenario(base, "warm-up", [], None, limit_s=3.0))

        settle(server, 240.0)
        cpu0 = server.cpu_seconds()
        for _ in range(repeat):
            for name in names:
                log = asyncio.run(run_scenario(base, name, SCENARIOS[name], echo_db))
                print(f"bench turns: {engine}: {name}: {log.seconds:.0f} s"
                      + (f", ERROR {log.error}" if log.error else ""), file=sys.stderr, flush=True)
                logs.append(log)
        cpu = server.cpu_seconds() - cpu0
    return logs, cpu


def report(engine: str, profile: str, names: Sequence[str], logs: Sequence[CallLog], cpu: float,
           echo_db: float | None) -> tuple[Scores, list[tuple[str, bool]]]:  # fmt: skip
    """Print one engine's figures and target checks; return its totals and checks."""
    call_s = sum(log.seconds for log in logs)
    total = Scores()
    print(f"turns benchmark: engine {engine}, profile {profile}, {len(logs)} calls, "
          f"{call_s:.0f} call-seconds; echo {echo_db if echo_db is not None else 'none'} dB; "
          f"machine: {os.cpu_count()} cores, {machine()}")
    for name in names:
        mine = Scores()
        for log in logs:
            if log.scenario == name:
                mine.add(score(log))
        total.add(mine)
        print(render(name, mine))
    print(render("ALL", total))
    print(f"server CPU s per call-second: {cpu / call_s:.3f}" if call_s else "no calls")
    wrong = total.wrong_stops / total.backchannels if total.backchannels else 0.0
    replies = total.wrong_replies / total.pauses if total.pauses else 0.0
    checks = [
        ("turn-taking p50 <= 0.35 s", bool(total.turn_latency_s)
         and float(np.percentile(total.turn_latency_s, 50)) <= TARGETS["turn_p50"]),
        ("barge-in stop p95 <= 0.25 s", bool(total.stop_latency_s) and not total.not_stopped
         and float(np.percentile(total.stop_latency_s, 95)) <= TARGETS["stop_p95"]),
        ("backchannel wrong stops <= 5 %", wrong <= TARGETS["wrong_stops"]),
        ("replies in mid-sentence pauses <= 5 %", replies <= TARGETS["wrong_replies"]),
    ]  # fmt: skip
    for label, ok in checks:
        print(f"target {label}: {'met' if ok else 'MISSED'}")
    return total, checks


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench turns", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--engine", "--engines", dest="engines", default="pipeline,duplex",
                   help="comma-separated engines, each on its own server, one after the other "
                        "(default: pipeline,duplex)")  # fmt: skip
    p.add_argument("--profile", help="agent profile (default: customer_service for the pipeline, "
                                     "else the first inbound profile of the engine)")  # fmt: skip
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated; default all")
    p.add_argument("--repeat", type=int, default=1, help="run each scenario this many times")
    p.add_argument("--echo-db", type=float, help="echo the agent's audio into the caller's channel")
    p.add_argument("--json", help="also write the raw logs and scores here")
    args = p.parse_args(argv)
    names = [n for n in args.scenarios.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    engines = [e for e in args.engines.split(",") if e]
    if unknown or args.repeat < 1 or not engines:
        p.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}" if unknown
                else "--repeat must be >= 1" if args.repeat < 1 else "no engine")  # fmt: skip
    results: dict[str, tuple[str, list[CallLog], float]] = {}
    for engine in engines:
        profile = _profile_for(engine, args.profile if len(engines) == 1 else None)
        logs, cpu = run_engine(engine, profile, names, args.repeat, args.echo_db)
        results[engine] = (profile, logs, cpu)
    summary: list[tuple[str, Scores, list[tuple[str, bool]]]] = []
    for engine, (profile, logs, cpu) in results.items():
        total, checks = report(engine, profile, names, logs, cpu, args.echo_db)
        summary.append((engine, total, checks))
        print()
    if len(summary) > 1:
        print("side by side:")
        for engine, total, checks in summary:
            print(render(engine, total) + " | targets met " + f"{sum(ok for _, ok in checks)}/{len(checks)}")
    errors = [f"{engine}: {log.scenario}: {log.error}"
              for engine, (_, logs, _) in results.items() for log in logs if log.error]  # fmt: skip
    for e in errors:
        print(f"error: {e}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            engine: {"profile": profile, "cpu_s": cpu, "logs": [asdict(log) for log in logs],
                     "total": asdict(next(t for e, t, _ in summary if e == engine))}
            for engine, (profile, logs, cpu) in results.items()}, indent=1))  # fmt: skip
    return 1 if errors else 0
