"""A real Prometheus Alertmanager run locally (``ept run``, tests), bound to 127.0.0.1.

The binary is ``EPT_ALERTMANAGER_BINARY``, else one on PATH, else the one
``deploy/local/install-alertmanager.sh`` builds into ``~/.cache/ept`` (``make setup`` runs
it). Alertmanager runs without clustering (``--cluster.listen-address=``); its silences and
notification log live in the data directory, so a restart keeps them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

VERSION = "0.35.0"
HOST = "127.0.0.1"
INSTALL_HINT = ("build it with `bash deploy/local/install-alertmanager.sh` (needs Go), or set "
                "EPT_ALERTMANAGER_BINARY to an alertmanager binary")


class AlertmanagerError(RuntimeError):
    """The local Alertmanager could not be found, started or stopped; the message says why."""


def find_binary() -> Path | None:
    """The Alertmanager binary to run, or None when there is none on this machine."""
    named = os.environ.get("EPT_ALERTMANAGER_BINARY")
    if named:
        return Path(named) if Path(named).is_file() else None
    on_path = shutil.which("alertmanager")
    if on_path:
        return Path(on_path)
    cache = Path(os.environ.get("EPT_CACHE_DIR") or Path.home() / ".cache" / "ept")
    built = cache / f"alertmanager-{VERSION}" / "alertmanager"
    return built if built.is_file() else None


class LocalAlertmanager:
    """One Alertmanager process with ``config`` (YAML), state in ``data_dir``."""

    def __init__(self, data_dir: Path, config: Path, port: int,
                 binary: Path | None = None) -> None:
        self.data_dir, self.config, self.port = data_dir, config, port
        self._binary = binary or find_binary()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "alertmanager.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it answers. Raises AlertmanagerError."""
        if self._binary is None:
            raise AlertmanagerError(f"no Alertmanager binary: {INSTALL_HINT}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child's lifetime
        self._process = subprocess.Popen(
            [str(self._binary), f"--config.file={self.config}",
             f"--storage.path={self.data_dir}", f"--web.listen-address={HOST}:{self.port}",
             "--cluster.listen-address=", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AlertmanagerError(f"Alertmanager exited: {self._log_tail()}")
            if self.answers():
                return
            time.sleep(0.2)
        self.stop()
        raise AlertmanagerError(f"Alertmanager did not answer within {timeout:g} s: "
                                f"{self._log_tail()}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop it (SIGTERM: it saves silences and its notification log first)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
