"""The OpenAPI 3.1 document of the gateway's HTTP API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from gateway.config import GatewayConfig

__all__ = ["REASONS", "openapi_document"]

# status -> the stable reason codes a problem document of that status may carry
REASONS: dict[int, tuple[str, ...]] = {
    400: (
        "malformed_json",
        "bad_utf8",
        "non_finite",
        "too_deep",
        "too_many_values",
        "too_many_readings",
        "duplicate_key",
        "not_a_reading",
        "no_readings",
        "bad_gzip",
        "trailing_data",
        "bad_body_framing",
        # refused by the HTTP parser, before any handler
        "bad_request",
        "bad_request_line",
        "bad_content_length",
        "ambiguous_length",
        "bad_transfer_encoding",
        "bad_chunked_body",
    ),
    401: ("missing_token", "bad_token"),
    403: ("identity_mismatch",),
    408: ("body_timeout",),
    413: ("body_too_large",),
    415: ("unsupported_media_type", "unsupported_charset", "unsupported_encoding"),
    417: ("expectation_failed",),
    429: ("rate_limited", "address_rate_limited"),
    431: ("header_too_large", "too_many_headers"),
    503: (
        "shutting_down",
        "landing_failed",
        "landing_disk_full",
        "processor_lag",
        "too_many_connections",
    ),
}


def _problem_response(status: int, text: str, retry: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": f"{text} Reason codes: {', '.join(REASONS[status])}.",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if retry:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def openapi_document(config: GatewayConfig) -> dict[str, Any]:
    scheme = "https" if config.http_tls_cert is not None else "http"
    reading = {
        "type": "object",
        "description": "One reading, the energylake envelope (see docs/GATEWAY.md).",
        "required": ["device_id", "seq", "ts", "readings"],
        "properties": {
            "device_id": {"type": "string", "description": "Must be the token's device."},
            "seq": {"type": "integer", "minimum": 0, "description": "Per-device sequence."},
            "boot": {
                "type": "integer",
                "minimum": 0,
                "description": "Optional: the device's boot number (seq may start again with it).",
            },
            "ts": {
                "type": ["integer", "number", "string"],
                "description": "Event time: epoch microseconds or RFC 3339.",
            },
            "readings": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
            "units": {"type": "object", "additionalProperties": {"type": "string"}},
            "client_id": {"type": "string", "description": "Optional claim; must match."},
            "branch_id": {"type": "string", "description": "Optional claim; must match."},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "energylake gateway",
            "version": "1",
            "description": (
                "Device telemetry ingest. A 202 means the readings are fsynced in the "
                "landing log and will reach the lake exactly once (deduplicated on "
                "device_id and seq, so retrying a request is safe)."
            ),
        },
        "servers": [{"url": f"{scheme}://{config.http_host}:{config.http_port}"}],
        "components": {
            "securitySchemes": {
                "deviceToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The device's own token (only its SHA-256 is stored).",
                }
            },
            "schemas": {
                "Reading": reading,
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details.",
                    "required": ["type", "title", "status", "detail", "reason"],
                    "properties": {
                        "type": {"type": "string", "format": "uri"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "reason": {
                            "type": "string",
                            "enum": sorted({r for rs in REASONS.values() for r in rs}),
                        },
                    },
                },
                "Accepted": {
                    "type": "object",
                    "required": ["accepted", "device_id"],
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 1},
                        "device_id": {"type": "string"},
                    },
                },
            },
        },
        "paths": {
            "/v1/telemetry": {
                "post": {
                    "summary": "Send readings of one device",
                    "security": [{"deviceToken": []}],
                    "parameters": [
                        {
                            "name": "Content-Encoding",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "enum": ["gzip", "identity"]},
                            "description": (
                                f"gzip bodies are inflated up to "
                                f"{config.http_max_decompressed_bytes} bytes."
                            ),
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "description": (
                            f"At most {config.http_max_body_bytes} bytes, "
                            f"{config.http_max_readings} readings, nesting depth "
                            f"{config.http_max_depth}."
                        ),
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Reading"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Reading"},
                                            "minItems": 1,
                                            "maxItems": config.http_max_readings,
                                        },
                                    ]
                                }
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "string",
                                    "description": "One Reading object per line.",
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted: on disk (fsynced) in the landing log.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Accepted"}
                                }
                            },
                        },
                        "400": _problem_response(400, "Malformed request or body."),
                        "401": _problem_response(401, "No, unknown or revoked token."),
                        "403": _problem_response(
                            403, "A reading claims another device, client or branch (audited)."
                        ),
                        "408": _problem_response(
                            408,
                            f"The body did not arrive within {config.http_body_timeout_s:g} s.",
                        ),
                        "413": _problem_response(413, "Body or inflated body too large."),
                        "415": _problem_response(415, "Wrong Content-Type or Content-Encoding."),
                        "417": _problem_response(417, "An Expect other than 100-continue."),
                        "429": _problem_response(
                            429,
                            "Over the device's rate, or too many failed authentications "
                            "from the client's address (checked before authentication).",
                            retry=True,
                        ),
                        "431": _problem_response(431, "Header fields too long or too many."),
                        "503": _problem_response(
                            503,
                            "The landing log cannot take more now, or the gateway serves as "
                            "many connections as it may.",
                            retry=True,
                        ),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "responses": {"200": {"description": "alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Landing writable, identity book loaded, MQTT connected",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready; the body names the failed checks"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
    }
