"""The OpenAPI 3.1 document of the JSON API (served at /api/openapi.json).

``SCHEMAS`` are JSON Schemas (2020-12, as OpenAPI 3.1 uses them); the API validates
request bodies against them, so the document and the checks cannot disagree.
"""

from __future__ import annotations

from typing import Any, Final

from callagent.console.roles import Role

__all__ = ["SCHEMAS", "openapi_document"]

_ROLES = [r.value for r in Role]

SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}}},
    "NewOperator": {
        "type": "object", "additionalProperties": False,
        "required": ["username", "password", "role"],
        "properties": {
            "username": {"type": "string", "minLength": 2, "maxLength": 64},
            "password": {"type": "string", "minLength": 12, "maxLength": 1024},
            "role": {"enum": _ROLES},
        },
    },
    "RoleChange": {"type": "object", "additionalProperties": False, "required": ["role"],
                   "properties": {"role": {"enum": _ROLES}}},
    "Operator": {"type": "object", "properties": {
        "username": {"type": "string"}, "role": {"enum": _ROLES}, "active": {"type": "boolean"}}},
    "NewCampaign": {
        "type": "object", "additionalProperties": False,
        "required": ["key", "name", "agent_profile", "caller_id", "purpose"],
        "properties": {
            "key": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "agent_profile": {"type": "string", "minLength": 1, "maxLength": 64},
            "caller_id": {"type": "string", "pattern": "^\\+[1-9][0-9]{1,14}$"},
            "purpose": {"enum": ["informational", "telemarketing"]},
            "window_start": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
            "window_end": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
            "max_concurrent_calls": {"type": "integer", "minimum": 1, "maximum": 1000},
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        },
    },
    "Call": {"type": "object", "properties": {
        "id": {"type": "string"}, "started_at": {"type": "string", "format": "date-time"},
        "direction": {"enum": ["inbound", "outbound"]}, "from_number": {"type": "string"},
        "to_number": {"type": "string"}, "agent": {"type": "string"},
        "engine": {"type": "string"}, "campaign_id": {"type": ["integer", "null"]},
        "status": {"type": "string"}, "end_reason": {"type": ["string", "null"]},
        "duration_s": {"type": ["integer", "null"]},
        "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "answered_by": {"type": ["string", "null"]},
        "twilio_call_sid": {"type": ["string", "null"]}}},
    "Turn": {"type": "object", "properties": {
        "seq": {"type": "integer"}, "speaker": {"enum": ["caller", "agent"]},
        "text": {"type": "string"}, "start_ms": {"type": "number"}, "end_ms": {"type": "number"},
        "interrupted": {"type": "boolean"}, "heard_text": {"type": ["string", "null"]},
        "heard_ms": {"type": ["number", "null"]},
        "response_latency_ms": {"type": ["number", "null"]}}},
    "ToolCall": {"type": "object", "properties": {
        "tool_call_id": {"type": "string"}, "name": {"type": "string"},
        "arguments": {"type": "string"}, "result": {"type": "string"},
        "status": {"type": "string"}, "started_at": {"type": "string", "format": "date-time"},
        "duration_ms": {"type": "number"}, "error": {"type": "string"}}},
    "AuditLine": {"type": "object", "properties": {
        "seq": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
        "actor": {"type": "string"}, "action": {"type": "string"}, "details": {"type": "string"}}},
    "CallPage": {"type": "object", "properties": {
        "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
        "next_cursor": {"type": ["string", "null"]}}},
    "CallDetail": {"type": "object", "properties": {
        "call": {"$ref": "#/components/schemas/Call"},
        "turns": {"type": "array", "items": {"$ref": "#/components/schemas/Turn"}},
        "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}},
        "audit": {"type": "array", "items": {"$ref": "#/components/schemas/AuditLine"}}}},
    "Imported": {"type": "object", "properties": {
        "imported": {"type": "integer"}, "rejected": {"type": "integer"},
        "errors": {"type": "array", "items": {"type": "string"}}}},
    "CampaignProgress": {"type": "object", "properties": {
        "campaign": {"type": "object"}, "contacts": {"type": "integer"},
        "by_state": {"type": "array"}, "by_outcome": {"type": "array"},
        "attempts": {"type": "integer"}, "skipped": {"type": "array"}}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad input (the message names the field)", 401: "No valid bearer token",
            403: "The token's role may not do this", 404: "Not found", 409: "Conflict",
            415: "Wrong content type"}
    return {str(c): _json("Error", text[c]) for c in codes}


def _filters() -> list[dict[str, Any]]:
    names = {"from": "first day (YYYY-MM-DD, UTC)", "to": "last day (YYYY-MM-DD, UTC)",
             "direction": "inbound or outbound", "campaign": "campaign id",
             "agent": "agent profile", "engine": "engine name",
             "outcome": "final call status (completed, busy, ...)",
             "number": "caller or called number (E.164)",
             "q": "words said in one turn (full-text)", "cursor": "next_cursor of the last page",
             "limit": "page size, 1-500"}
    return [{"name": n, "in": "query", "required": False, "description": d,
             "schema": {"type": "string"}} for n, d in names.items()]


def _op(summary: str, role: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": f"{summary} (role: {role} or above)", "security": [{"bearer": []}],
            "responses": responses, **extra}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def openapi_document(server_url: str) -> dict[str, Any]:
    call_id = [{"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    campaign_id = [{"name": "campaign_id", "in": "path", "required": True,
                    "schema": {"type": "integer"}}]
    username = [{"name": "username", "in": "path", "required": True,
                 "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "callagent console API", "version": "1"},
        "servers": [{"url": server_url.rstrip("/") + "/api"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "callagent token create <user>"}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/dashboard": {"get": _op("Today's figures", "viewer",
                                      {"200": {"description": "OK"}, **_errors(401)})},
            "/calls": {"get": _op("Calls, newest first, keyset-paginated", "viewer",
                                  {"200": _json("CallPage"), **_errors(400, 401)},
                                  parameters=_filters())},
            "/calls/{call_id}": {"get": _op(
                "One call: transcript, tool calls, audit trail (audited)", "viewer",
                {"200": _json("CallDetail"), **_errors(401, 404)}, parameters=call_id)},
            "/calls/{call_id}/export": {"get": _op(
                "Export a call as JSON or CSV (audited)", "supervisor",
                {"200": {"description": "The file", "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/csv": {"schema": {"type": "string"}}}}, **_errors(400, 401, 403, 404)},
                parameters=call_id + [{"name": "format", "in": "query", "required": False,
                                       "schema": {"enum": ["json", "csv"]}}])},
            "/operators": {
                "get": _op("Operators", "admin", {"200": {"description": "OK"},
                                                  **_errors(401, 403)}),
                "post": _op("Add an operator", "admin",
                            {"201": _json("Operator"), **_errors(400, 401, 403, 409)},
                            requestBody=_body("NewOperator")),
            },
            "/operators/{username}/role": {"post": _op(
                "Change an operator's role", "admin",
                {"200": _json("Operator"), **_errors(400, 401, 403, 404)},
                parameters=username, requestBody=_body("RoleChange"))},
            "/operators/{username}/disable": {"post": _op(
                "Disable an operator (ends its sessions, revokes its tokens)", "admin",
                {"200": _json("Operator"), **_errors(400, 401, 403, 404)}, parameters=username)},
            "/campaigns": {
                "get": _op("Campaigns", "supervisor", {"200": {"description": "OK"},
                                                       **_errors(401, 403)}),
                "post": _op("Create a campaign (draft)", "supervisor",
                            {"201": {"description": "Created"}, **_errors(400, 401, 403, 409)},
                            requestBody=_body("NewCampaign")),
            },
            "/campaigns/{campaign_id}": {"get": _op(
                "Progress and outcomes", "supervisor",
                {"200": _json("CampaignProgress"), **_errors(401, 403, 404)},
                parameters=campaign_id)},
            "/campaigns/{campaign_id}/contacts": {"post": _op(
                "Import contacts from a CSV file (bad rows reported)", "supervisor",
                {"200": _json("Imported"), **_errors(400, 401, 403, 404, 415)},
                parameters=campaign_id,
                requestBody={"required": True,
                             "content": {"text/csv": {"schema": {"type": "string"}}}})},
            "/campaigns/{campaign_id}/start": {"post": _op(
                "Start (or resume) a campaign", "supervisor",
                {"200": {"description": "OK"}, **_errors(401, 403, 404, 409)},
                parameters=campaign_id)},
            "/campaigns/{campaign_id}/pause": {"post": _op(
                "Pause a running campaign", "supervisor",
                {"200": {"description": "OK"}, **_errors(401, 403, 404, 409)},
                parameters=campaign_id)},
        },
    }
