"""Polling with deadlines: tests never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from gecko_demo.cluster import free_port

__all__ = ["free_port", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes.

    Exceptions raised by the predicate count as "not yet"; the last one is
    chained into the final ``TimeoutError``.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:
            last_exc = exc
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}") from last_exc
        time.sleep(interval)
