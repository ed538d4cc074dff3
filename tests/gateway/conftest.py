"""Helpers for gateway tests live in tests/gatewayproc.py (shared with tests/e2e)."""

from __future__ import annotations

from tests.gatewayproc import (
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
