"""The sample order database behind the shipped customer-service agent.

Orders are read from the packaged ``data/orders.json`` (about twenty fictional
orders). Lookups are pure functions over a tuple of orders; a change of
address produces a new `Order` record. `OrderStore` keeps the current records
and their history in memory for one process (persistence comes later); it is
not thread-safe: use it from one task.

`Order.fields()` is what a flow's tool node saves (``save_as = "order"`` makes
``{order.status_text}`` etc. available to its prompts).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from importlib import resources
from typing import Any

__all__ = [
    "AddressChangeRefused",
    "Order",
    "OrderDataError",
    "OrderStatus",
    "OrderStore",
    "find_order",
    "find_orders_by_phone",
    "load_orders",
    "normalize_order_number",
    "normalize_phone",
    "sample_orders",
    "with_new_address",
]

_FIELDS = ("order_number", "customer_name", "phone", "placed_on", "status", "carrier", "eta",
           "address")  # fmt: skip
_ORDER_NUMBER = re.compile(r"^\d{5}$")
_PHONE = re.compile(r"^\+\d{10,15}$")
MAX_ADDRESS = 200


class OrderDataError(ValueError):
    """The order data file is malformed; the message names the record and field."""


class AddressChangeRefused(ValueError):
    """The order's address cannot be changed; `reason` is fit to say to the caller."""

    def __init__(self, order_number: str, reason: str) -> None:
        super().__init__(f"order {order_number}: {reason}")
        self.order_number = order_number
        self.reason = reason


class OrderStatus(enum.StrEnum):
    PROCESSING = "processing"
    SHIPPED = "shipped"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    RETURNED = "returned"


# Why the address of an order in this status cannot change (absent: it can).
_LOCKED = {
    OrderStatus.OUT_FOR_DELIVERY: "it is already out for delivery",
    OrderStatus.DELIVERED: "it has already been delivered",
    OrderStatus.CANCELLED: "it was cancelled",
    OrderStatus.RETURNED: "it was returned",
}


def _spoken_date(d: date) -> str:
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    months = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")  # fmt: skip
    return f"{days[d.weekday()]}, {months[d.month - 1]} {d.day}"


@dataclass(frozen=True, slots=True)
class Order:
    order_number: str
    customer_name: str
    phone: str  # E.164
    placed_on: date
    status: OrderStatus
    carrier: str  # "" before shipping
    eta: date | None  # expected (or actual, once delivered) delivery date
    address: str  # one line, as a caller would say it

    @property
    def status_text(self) -> str:
        """A clause to follow "Order 4 5 7 2 9 ..."."""
        eta = _spoken_date(self.eta) if self.eta else ""
        match self.status:
            case OrderStatus.PROCESSING:
                return "is being prepared and has not shipped yet" + (
                    f"; it should arrive by {eta}" if eta else ""
                )
            case OrderStatus.SHIPPED:
                return f"has shipped with {self.carrier}" + (
                    f" and should arrive on {eta}" if eta else ""
                )
            case OrderStatus.OUT_FOR_DELIVERY:
                return f"is out for delivery with {self.carrier}"
            case OrderStatus.DELIVERED:
                return f"was delivered on {eta}" if eta else "was delivered"
            case OrderStatus.CANCELLED:
                return "was cancelled"
            case OrderStatus.RETURNED:
                return "was returned to us"

    def fields(self) -> dict[str, str]:
        """Flat string fields for a flow's placeholders."""
        return {
            "order_number": self.order_number,
            "customer_name": self.customer_name,
            "status": self.status.value,
            "status_text": self.status_text,
            "carrier": self.carrier,
            "eta": self.eta.isoformat() if self.eta else "",
            "eta_text": _spoken_date(self.eta) if self.eta else "",
            "address": self.address,
        }


def normalize_order_number(text: str) -> str:
    """The digits of an order number as typed or transcribed ("#457-29" -> "45729")."""
    return "".join(c for c in text if c.isdigit())


def normalize_phone(text: str) -> str:
    """The national part (last ten digits) of a phone number, for comparison."""
    return "".join(c for c in text if c.isdigit())[-10:]


def find_order(orders: Iterable[Order], number: str) -> Order | None:
    wanted = normalize_order_number(number)
    return next((o for o in orders if o.order_number == wanted), None) if wanted else None


def find_orders_by_phone(orders: Iterable[Order], phone: str) -> tuple[Order, ...]:
    """The caller's orders, newest first."""
    wanted = normalize_phone(phone)
    if len(wanted) < 10:
        return ()
    found = [o for o in orders if normalize_phone(o.phone) == wanted]
    return tuple(sorted(found, key=lambda o: (o.placed_on, o.order_number), reverse=True))


def with_new_address(order: Order, new_address: str) -> Order:
    """A new record of `order` delivering to `new_address`, or AddressChangeRefused."""
    address = " ".join(new_address.split())
    if order.status in _LOCKED:
        raise AddressChangeRefused(order.order_number, _LOCKED[order.status])
    if len(address) < 5 or not any(c.isalpha() for c in address):
        raise AddressChangeRefused(order.order_number, "the new address is incomplete")
    if len(address) > MAX_ADDRESS:
        raise AddressChangeRefused(order.order_number, "the new address is too long")
    if address.casefold() == order.address.casefold():
        raise AddressChangeRefused(order.order_number, "that is already the delivery address")
    return replace(order, address=address)


def load_orders(text: str, source: str = "orders") -> tuple[Order, ...]:
    """Parse and validate the JSON order file ({"orders": [...]})."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OrderDataError(f"{source}: not valid JSON: {exc}") from None
    records = data.get("orders") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise OrderDataError(f'{source}: expected an object with an "orders" array')
    orders: list[Order] = []
    for i, record in enumerate(records):
        order = _order(record, f"{source}: orders[{i}]")
        if any(o.order_number == order.order_number for o in orders):
            raise OrderDataError(
                f"{source}: orders[{i}].order_number: {order.order_number} appears twice"
            )
        orders.append(order)
    return tuple(orders)


def _order(record: Any, where: str) -> Order:
    if not isinstance(record, dict):
        raise OrderDataError(f"{where}: expected an object")
    missing = [f for f in _FIELDS if f not in record]
    extra = sorted(set(record) - set(_FIELDS))
    if missing or extra:
        raise OrderDataError(f"{where}: missing {missing}, unknown {extra}")
    for name in _FIELDS:
        if name != "eta" and not isinstance(record[name], str):
            raise OrderDataError(f"{where}.{name}: expected a string")
    if not _ORDER_NUMBER.match(record["order_number"]):
        raise OrderDataError(f"{where}.order_number: expected five digits")
    if not _PHONE.match(record["phone"]):
        raise OrderDataError(f"{where}.phone: expected E.164 (+15555550100)")
    try:
        status = OrderStatus(record["status"])
    except ValueError:
        raise OrderDataError(
            f"{where}.status: expected one of {[s.value for s in OrderStatus]}"
        ) from None
    eta = record["eta"]
    if eta is not None and not isinstance(eta, str):
        raise OrderDataError(f"{where}.eta: expected a date string or null")
    try:
        placed_on = date.fromisoformat(record["placed_on"])
        eta_date = date.fromisoformat(eta) if eta else None
    except ValueError as exc:
        raise OrderDataError(f"{where}: bad date: {exc}") from None
    if status in (OrderStatus.SHIPPED, OrderStatus.OUT_FOR_DELIVERY) and not record["carrier"]:
        raise OrderDataError(f"{where}.carrier: required once an order has shipped")
    return Order(record["order_number"], record["customer_name"], record["phone"], placed_on,
                 status, record["carrier"], eta_date, record["address"])  # fmt: skip


def sample_orders() -> tuple[Order, ...]:
    """The packaged sample orders."""
    ref = resources.files("callagent.agents") / "data" / "orders.json"
    return load_orders(ref.read_text(encoding="utf-8"), "callagent/agents/data/orders.json")


class OrderStore:
    """Current order records, with every earlier version kept (in memory)."""

    def __init__(self, orders: Iterable[Order]) -> None:
        self._history: dict[str, list[Order]] = {}
        for order in orders:
            if order.order_number in self._history:
                raise ValueError(f"order {order.order_number} appears twice")
            self._history[order.order_number] = [order]

    @classmethod
    def sample(cls) -> OrderStore:
        return cls(sample_orders())

    def __len__(self) -> int:
        return len(self._history)

    def __iter__(self) -> Iterator[Order]:
        return (versions[-1] for versions in self._history.values())

    def get(self, number: str) -> Order | None:
        versions = self._history.get(normalize_order_number(number))
        return versions[-1] if versions else None

    def by_phone(self, phone: str) -> tuple[Order, ...]:
        return find_orders_by_phone(self, phone)

    def change_address(self, number: str, new_address: str) -> Order:
        """Record a new version with the new address; KeyError if there is no such order."""
        current = self.get(number)
        if current is None:
            raise KeyError(number)
        updated = with_new_address(current, new_address)
        self._history[current.order_number].append(updated)
        return updated

    def history(self, number: str) -> tuple[Order, ...]:
        return tuple(self._history.get(normalize_order_number(number), ()))
