"""Built-in tools: call control (end_call, transfer_to_human, collect_digits,
record_opt_out, stop_recording) and the sample order database lookups.

Each handler takes the validated arguments and returns a ``ToolResult``; a
``ToolFailure`` becomes an error result the agent can speak around.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from callagent.agents.orders import AddressChangeRefused, OrderStore
from callagent.tools.controls import CallControls
from callagent.tools.outcome import ToolFailure, ToolResult, ToolState

__all__ = ["BUILTIN_NAMES", "Handler", "builtin_handlers"]

Handler = Callable[[Mapping[str, object]], Awaitable[ToolResult]]
BUILTIN_NAMES: Final = (
    "end_call", "transfer_to_human", "collect_digits", "record_opt_out", "stop_recording",
    "lookup_order", "find_orders_by_phone", "change_address",
)  # fmt: skip


def _text(args: Mapping[str, object], name: str, default: str = "") -> str:
    value = args.get(name, default)
    return value if isinstance(value, str) else str(value)


def _int(args: Mapping[str, object], name: str, default: int) -> int:
    value = args.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def builtin_handlers(store: OrderStore | None, controls: CallControls | None) -> dict[str, Handler]:
    """The built-ins available with these back ends (call control needs ``controls``)."""
    out: dict[str, Handler] = {}
    if controls is not None:
        c = controls

        async def end_call(args: Mapping[str, object]) -> ToolResult:
            try:
                await c.hang_up(_text(args, "reason", "agent ended the call"))
            except Exception as exc:
                raise ToolFailure(f"the call could not be ended: {exc}") from exc
            return ToolResult(ToolState.OK, {"ended": True})

        async def transfer_to_human(args: Mapping[str, object]) -> ToolResult:
            target = _text(args, "target")
            if not target:
                raise ToolFailure("no transfer target was given")
            warm = bool(args.get("warm", False))
            try:
                await c.transfer(target, warm, _text(args, "announce"))
            except Exception as exc:
                raise ToolFailure(f"the transfer failed: {exc}") from exc
            return ToolResult(ToolState.OK, {"target": target, "warm": warm})

        async def collect_digits(args: Mapping[str, object]) -> ToolResult:
            secure = bool(args.get("secure", False))
            digits = await c.collect_digits(
                _int(args, "max_len", 19), _text(args, "terminator", "#"), secure
            )
            return ToolResult(ToolState.OK, {"digits": digits, "secure": secure})

        async def record_opt_out(args: Mapping[str, object]) -> ToolResult:
            number = c.record_opt_out(_text(args, "channel", "voice"))
            return ToolResult(ToolState.OK, {"opted_out": True, "number": number})

        async def stop_recording(args: Mapping[str, object]) -> ToolResult:
            c.stop_recording("asked the agent")
            return ToolResult(ToolState.OK, {"recording": "stopped"})

        out.update(end_call=end_call, transfer_to_human=transfer_to_human,
                   collect_digits=collect_digits, record_opt_out=record_opt_out,
                   stop_recording=stop_recording)  # fmt: skip
    if store is not None:
        s = store

        async def lookup_order(args: Mapping[str, object]) -> ToolResult:
            order = s.get(_text(args, "order_number"))
            if order is None:
                return ToolResult(ToolState.NOT_FOUND)
            return ToolResult(ToolState.OK, order.fields())

        async def find_orders_by_phone(args: Mapping[str, object]) -> ToolResult:
            orders = s.by_phone(_text(args, "phone"))
            if not orders:
                return ToolResult(ToolState.NOT_FOUND)
            return ToolResult(ToolState.OK, orders[0].fields())

        async def change_address(args: Mapping[str, object]) -> ToolResult:
            try:
                order = s.change_address(_text(args, "order_number"), _text(args, "new_address"))
            except KeyError:
                return ToolResult(ToolState.NOT_FOUND, {"reason": "there is no such order"})
            except AddressChangeRefused as exc:
                return ToolResult(ToolState.ERROR, {"reason": exc.reason}, exc.reason)
            return ToolResult(ToolState.OK, order.fields())

        out.update(lookup_order=lookup_order, find_orders_by_phone=find_orders_by_phone,
                   change_address=change_address)  # fmt: skip
    return out
