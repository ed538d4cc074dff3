"""Helpers for gateway tests live in devstack/gateway.py (shared with tests/e2e)."""

from __future__ import annotations

from devstack.gateway import (
    HOST,
    GatewayProc,
    Reply,
    free_port,
    landed,
    make_book,
    raw,
    request,
    running_gateway,
    start_gateway,
    wait_for,
)

__all__ = [
    "HOST",
    "GatewayProc",
    "Reply",
    "free_port",
    "landed",
    "make_book",
    "raw",
    "request",
    "running_gateway",
    "start_gateway",
    "wait_for",
]
