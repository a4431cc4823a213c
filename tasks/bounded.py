"""Task timeouts that hold wherever the task runs.

Prefect enforces a task's `timeout_seconds` with SIGALRM only on the main thread; in a worker
thread (every `.submit`, every flow not run on the main thread) a blocked call runs on and
Prefect logs that the timeout cannot interrupt it. The emergency path cannot wait on a hung
socket, so its tasks declare no `timeout_seconds` and wrap their body with `bounded(seconds)`
instead: the body runs in a daemon thread and the caller stops waiting at the timeout, raising
`TimeoutError`. Prefect treats that like any exception of the task (its retries apply, then the
run fails `TimedOut`); the abandoned call finishes or dies with the process, its result unused.

Use it only for bodies that are safe to abandon: reads, probes, and idempotent actions whose
outcome the flow verifies afterwards (a redirect is verified by reading the active backend).
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class BoundedTimeout(TimeoutError):
    """The body did not finish within its bound; it was abandoned (still running or not)."""


def call_bounded(seconds: float, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """`fn(*args, **kwargs)`, abandoned after `seconds` with BoundedTimeout."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def body() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller as is
            box["error"] = exc
        finally:
            done.set()

    name = getattr(fn, "__name__", "call")
    ctx = contextvars.copy_context()  # the task run's context (logger) in the body's thread
    t = threading.Thread(target=ctx.run, args=(body,), name=f"bounded-{name}", daemon=True)
    t.start()
    if not done.wait(seconds):
        raise BoundedTimeout(f"{name} did not finish within {seconds:g} s (abandoned)")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def bounded(seconds: float) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the function's calls are abandoned after `seconds` (see `call_bounded`).

    Put it under `@task(...)`; the timeout is then `fn.bound_s` (read by the tests and docs).
    """

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            return call_bounded(seconds, fn, *args, **kwargs)

        inner.bound_s = seconds  # type: ignore[attr-defined]
        return inner

    return wrap
