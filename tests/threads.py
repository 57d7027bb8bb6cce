"""Waiting for a background thread to reach a state: bounded, so a broken test fails instead of hanging, and the
bound is never asserted on (a busy machine is slow, not wrong)."""

from __future__ import annotations

import threading

WAIT_S = 120


def wait_until(condition, what: str = "the expected state") -> None:
    for _ in range(WAIT_S * 100):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"never reached {what}")
