"""Tool arguments are checked against the declared JSON schema before any call."""

from __future__ import annotations

import pytest

from callagent.tools.arguments import BadArguments, check_arguments, check_schema

SCHEMA = {
    "type": "object",
    "required": ["order_number"],
    "properties": {
        "order_number": {"type": "string", "pattern": "^[0-9]{5}$"},
        "count": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}


def test_valid_arguments_come_back_as_a_dict() -> None:
    assert check_arguments(SCHEMA, '{"order_number": "45729", "count": 2}') == {
        "order_number": "45729", "count": 2}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "arguments are not JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ("{}", "'order_number' is a required property"),
        ('{"order_number": "12"}', "order_number: '12' does not match"),
        ('{"order_number": "45729", "count": 0}', "count: 0 is less than the minimum of 1"),
        ('{"order_number": "45729", "extra": 1}', "Additional properties are not allowed"),
        ('{"order_number": 45729}', "order_number: 45729 is not of type 'string'"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_rule(text: str, expected: str) -> None:
    with pytest.raises(BadArguments) as err:
        check_arguments(SCHEMA, text)
    assert expected in str(err.value)


def test_every_violation_is_listed() -> None:
    with pytest.raises(BadArguments) as err:
        check_arguments(SCHEMA, '{"order_number": "x", "count": -1}')
    assert "order_number:" in str(err.value) and "count:" in str(err.value)


def test_an_invalid_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid JSON schema"):
        check_schema({"type": "objekt"})
