"""``ept worker --processes N``: N worker processes on one host (one per core: Python runs
one at a time per process).

The parent starts N ``ept worker`` children, each a full worker: its event reader joins
the ``{prefix}worker-events`` group and its Faust app the worker group, so the event
partitions and the signals partitions are spread over the processes (and over the other
hosts' workers) by Kafka's group protocol, as they would be over N hosts. Child ``i``
serves its pages on ``EPT_WORKER_PORT + i`` (the first on the configured port). The
parent forwards SIGTERM/SIGINT, and starts again a child that exits on its own (backing
off up to 30 s): the others go on meanwhile, taking over its partitions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PAUSE_S = 30.0
STOP_TIMEOUT_S = 60.0


@dataclass
class _Child:
    index: int
    args: list[str]
    environment: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    pause_s: float = 1.0
    restart_at: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "ept.deploy.cli", *self.args],
                                        env=self.environment, stdin=subprocess.DEVNULL)


def child_environment(base: dict[str, str], index: int, worker_port: int) -> dict[str, str]:
    """Child ``index``'s environment: its own port, and one process (not N again)."""
    return {**base, "EPT_WORKER_PORT": str(worker_port + index),
            "EPT_WORKER_PROCESSES": "1"}


def run_processes(count: int, worker_args: list[str], worker_port: int,
                  say: Callable[[str], None]) -> int:
    """Run ``count`` children ``ept worker <worker_args> --processes 1`` until SIGTERM or
    SIGINT; then stop them (SIGTERM, SIGKILL after a minute). Blocks; returns 0."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    children = [_Child(i, ["worker", *worker_args, "--processes", "1"],
                       child_environment(dict(os.environ), i, worker_port))
                for i in range(count)]
    for child in children:
        child.start()
    say(f"ept worker: {count} processes, pages on ports {worker_port}-"
        f"{worker_port + count - 1}")
    clock = 0.0
    while not stop.wait(1.0):
        clock += 1.0
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            if child.restart_at == 0.0:
                child.restart_at = clock + child.pause_s
                say(f"ept worker: process {child.index} exited ({code}); starting it again "
                    f"in {child.pause_s:.0f} s")
                child.pause_s = min(MAX_PAUSE_S, child.pause_s * 2)
            elif clock >= child.restart_at:
                child.restart_at = 0.0
                child.start()
    for child in children:
        if child.process is not None and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(10)
    return 0
