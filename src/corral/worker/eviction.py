"""Eviction: taking a running task off this worker without losing its work (issue 14).

An evicted task's process tree gets SIGTERM (after SIGCONT, if desktop mode had stopped it),
has up to the grace period (`corral worker --checkpoint-grace S`) to write its checkpoint
and exit, and is then SIGKILLed with whatever it left running. Then the worker saves what
its checkpoint directory holds (unless that is exactly the checkpoint it restored or last
saved), through the same atomic save as `corral checkpoint`, and gives the task back: the
coordinator requeues it without counting the attempt, and it resumes from that checkpoint
(on another worker, or here later), or ends killed when a kill asked for the eviction. A
task that reaches its own result before its SIGTERM keeps that result.

What triggers it, and what the task then becomes:

    trigger                                   given back as   then
    SIGTERM to the worker (machine shutdown)  shutdown        requeued; the worker leaves
    a second SIGINT (Ctrl-C) to the worker    shutdown        requeued; the worker leaves
    the desktop's owner busy past its grace   owner           requeued (worker/idle.py)
    `corral drain --evict` (heartbeat reply)  evicted         requeued; the worker leaves
    `corral kill --checkpoint` (heartbeat)    evicted         killed (coordinator/stops.py)

A task leased but not started yet (prefetched, waiting for a slot) is given back at once.

SIGINT alone drains, as it always did: no new tasks, the running ones finish, then the
worker leaves. Ctrl-C at a terminal most often means "stop taking work"; pressing it again
means "stop now" and evicts. SIGTERM is what init systems and container runtimes send before
they SIGKILL, so it evicts at once: waiting for tasks of hours to finish would lose them.

The default grace, 10 s, is what `docker stop` gives a container: long enough for a program
that traps SIGTERM to write a checkpoint of moderate size, short enough that the worker is
done (grace, then the upload) within systemd's 90 s and Kubernetes' 30 s before they
SIGKILL it. A worker that is itself SIGKILLed early loses only the work since the task's
last save: the task is requeued by lease expiry and starts from its last checkpoint.
"""

from __future__ import annotations

import signal
from typing import Literal

__all__ = ["DEFAULT_GRACE", "on_signal"]

DEFAULT_GRACE = 10.0  # seconds between SIGTERM and SIGKILL of an evicted task


def on_signal(signum: int, draining: bool) -> Literal["drain", "evict"]:
    """What the worker does on a signal: SIGTERM evicts; SIGINT drains, or evicts when the
    worker is draining already (a second Ctrl-C)."""
    if signum == signal.SIGINT and not draining:
        return "drain"
    return "evict"
