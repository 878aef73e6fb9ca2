"""The sample order database: lookups, change of address, data validation."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, replace
from datetime import date

import pytest

from callagent.agents.orders import (
    AddressChangeRefused,
    Order,
    OrderDataError,
    OrderStatus,
    OrderStore,
    find_order,
    find_orders_by_phone,
    load_orders,
    normalize_order_number,
    normalize_phone,
    sample_orders,
    with_new_address,
)

RECORD = {
    "order_number": "45729", "customer_name": "Dana Whitfield", "phone": "+15555550101",
    "placed_on": "2025-06-02", "status": "shipped", "carrier": "UPS", "eta": "2025-06-12",
    "address": "14 Elm Street, Springfield, IL 62704",
}  # fmt: skip


def order(**changes: object) -> Order:
    base = load_orders(json.dumps({"orders": [RECORD]}))[0]
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_packaged_sample_has_twenty_distinct_valid_orders() -> None:
    orders = sample_orders()
    assert len(orders) == 20
    assert len({o.order_number for o in orders}) == 20
    assert {o.status for o in orders} == set(OrderStatus)  # every status is represented
    assert find_order(orders, "45729") is not None  # the number in the test clip 02


def test_lookup_by_number_tolerates_formatting() -> None:
    orders = sample_orders()
    found = find_order(orders, " #457-29 ")
    assert found is not None and found.customer_name == "Dana Whitfield"
    assert find_order(orders, "99999") is None
    assert find_order(orders, "") is None
    assert normalize_order_number("4 5 7 2 9") == "45729"


def test_lookup_by_phone_matches_any_format_newest_first() -> None:
    orders = sample_orders()
    for phone in ("+15555550101", "(555) 555-0101", "555.555.0101", "1 555 555 0101"):
        assert [o.order_number for o in find_orders_by_phone(orders, phone)] == ["24087", "45729"]
    assert find_orders_by_phone(orders, "+15555559999") == ()
    assert find_orders_by_phone(orders, "0101") == ()  # too short to compare
    assert normalize_phone("+1 (555) 555-0101") == "5555550101"


def test_change_of_address_makes_a_new_record_and_keeps_the_old() -> None:
    store = OrderStore.sample()
    before = store.get("45729")
    assert before is not None
    after = store.change_address("45729", "  22 Oak   Street, Springfield, IL 62704 ")
    assert after.address == "22 Oak Street, Springfield, IL 62704"
    assert before.address == "14 Elm Street, Springfield, IL 62704"  # records are immutable
    assert store.get("45729") == after
    assert store.history("45729") == (before, after)
    assert len(store) == 20 and after in list(store)
    with pytest.raises(FrozenInstanceError):
        after.address = "x"  # type: ignore[misc]


def test_change_of_address_of_an_unknown_order_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        OrderStore.sample().change_address("99999", "1 Main Street, Springfield")


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (OrderStatus.OUT_FOR_DELIVERY, "it is already out for delivery"),
        (OrderStatus.DELIVERED, "it has already been delivered"),
        (OrderStatus.CANCELLED, "it was cancelled"),
        (OrderStatus.RETURNED, "it was returned"),
    ],
)
def test_change_of_address_is_refused_once_the_order_left(status: OrderStatus, reason: str) -> None:
    with pytest.raises(AddressChangeRefused) as exc:
        with_new_address(order(status=status), "22 Oak Street, Springfield")
    assert exc.value.reason == reason and exc.value.order_number == "45729"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("12", "the new address is incomplete"),
        ("12345 67890", "the new address is incomplete"),
        ("x" * 201, "the new address is too long"),
        ("14 elm street, springfield, il 62704", "that is already the delivery address"),
    ],
)
def test_change_of_address_rejects_bad_addresses(address: str, reason: str) -> None:
    with pytest.raises(AddressChangeRefused, match=reason):
        with_new_address(order(), address)


def test_processing_orders_may_change_address() -> None:
    changed = with_new_address(order(status=OrderStatus.PROCESSING), "1 Main Street, Springfield")
    assert changed.address == "1 Main Street, Springfield"


@pytest.mark.parametrize(
    ("changes", "text"),
    [
        ({}, "has shipped with UPS and should arrive on Thursday, June 12"),
        ({"status": OrderStatus.PROCESSING, "carrier": ""},
         "is being prepared and has not shipped yet; it should arrive by Thursday, June 12"),
        ({"status": OrderStatus.PROCESSING, "eta": None},
         "is being prepared and has not shipped yet"),
        ({"status": OrderStatus.OUT_FOR_DELIVERY}, "is out for delivery with UPS"),
        ({"status": OrderStatus.DELIVERED, "eta": date(2025, 6, 3)},
         "was delivered on Tuesday, June 3"),
        ({"status": OrderStatus.CANCELLED, "eta": None}, "was cancelled"),
        ({"status": OrderStatus.RETURNED}, "was returned to us"),
    ],
)  # fmt: skip
def test_status_text_reads_well_after_the_order_number(
    changes: dict[str, object], text: str
) -> None:
    assert order(**changes).status_text == text


def test_fields_are_flat_strings_for_flow_placeholders() -> None:
    fields = order(eta=None).fields()
    assert set(fields) == {"order_number", "customer_name", "status", "status_text", "carrier",
                           "eta", "eta_text", "address"}  # fmt: skip
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["eta"] == "" and fields["status"] == "shipped"
    assert order().fields()["eta_text"] == "Thursday, June 12"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "orders: not valid JSON"),
        ('{"records": []}', 'an "orders" array'),
        ({"orders": [RECORD, RECORD]}, "orders[1].order_number: 45729 appears twice"),
        ({"orders": [{**RECORD, "status": "lost"}]}, "orders[0].status: expected one of"),
        ({"orders": [{**RECORD, "colour": "red"}]}, "unknown ['colour']"),
        ({"orders": [{k: v for k, v in RECORD.items() if k != "phone"}]}, "missing ['phone']"),
        ({"orders": [{**RECORD, "phone": "555-0101"}]}, "orders[0].phone: expected E.164"),
        ({"orders": [{**RECORD, "order_number": "4572"}]}, "order_number: expected five digits"),
        ({"orders": [{**RECORD, "eta": "June 12"}]}, "orders[0]: bad date"),
        ({"orders": [{**RECORD, "eta": 12}]}, "orders[0].eta: expected a date string or null"),
        ({"orders": [{**RECORD, "carrier": ""}]}, "orders[0].carrier: required once"),
        ({"orders": ["45729"]}, "orders[0]: expected an object"),
    ],
)
def test_bad_order_data_names_the_record_and_field(data: object, message: str) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(OrderDataError) as exc:
        load_orders(text)
    assert message in str(exc.value)


def test_store_refuses_duplicate_orders() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        OrderStore([order(), order()])
