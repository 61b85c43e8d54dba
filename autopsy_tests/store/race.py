"""Calls started at the same instant from several threads: how the store's races are tested."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def race(calls: Sequence[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    """Run each call in its own thread, all released together by a barrier.

    Returns what the calls returned, in the order they finished, and what they raised.
    """
    gate = threading.Barrier(len(calls))
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            gate.wait()
            results.append(call())
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
