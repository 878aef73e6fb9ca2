"""The TwiML that hands a live call to a person (Twilio Calls update, ``Twiml=``).

Targets: ``+E164`` (a phone), ``sip:...``, ``client:NAME`` or ``queue:NAME``
(``<Enqueue>``: the caller waits in a TaskRouter/queue for an agent).
Cold: ``<Dial>`` the target. Warm: the person first hears a whisper announcing
the caller: ``<Number url=...>`` (likewise ``<Sip>``, ``<Client>``) fetches
TwiML to play to them before the two are connected; a queue has no whisper.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from twilio.twiml.voice_response import Dial, VoiceResponse

__all__ = ["TransferError", "transfer_twiml"]

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


class TransferError(ValueError):
    """A transfer target or option we cannot turn into TwiML."""


def transfer_twiml(target: str, *, warm: bool = False, whisper_url: str = "",
                   announce: str = "", caller_id: str = "") -> str:  # fmt: skip
    target = target.strip()
    kind, _, rest = target.partition(":")
    response = VoiceResponse()
    if target.startswith("queue:"):
        if not _NAME.match(rest):
            raise TransferError(f"queue name {rest!r}: expected 1-128 letters, digits, _ . : @ -")
        if warm:
            raise TransferError("a warm transfer needs a phone number, sip: or client: target")
        response.enqueue(rest)
        return str(response)
    url = ""
    if warm:
        if not whisper_url:
            raise TransferError("a warm transfer needs a whisper URL")
        url = whisper_url + ("&" if "?" in whisper_url else "?") + urlencode({"text": announce})
    dial = Dial(caller_id=caller_id) if caller_id else Dial()
    extra = {"url": url} if url else {}
    if _E164.match(target):
        dial.number(target, **extra)
    elif target.startswith("sip:") and len(target) > 4 and " " not in target:
        dial.sip(target, **extra)
    elif kind == "client" and _NAME.match(rest):
        dial.client(rest, **extra)
    else:
        raise TransferError(
            f"transfer target {target!r}: expected +E.164, sip:URI, client:NAME or queue:NAME"
        )
    response.append(dial)
    return str(response)
