"""Runs the real operator (`python -m loom.operator`) as a child process against the embedded cluster."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class OperatorProcess:
    def __init__(self, kubeconfig: str | Path, s3_env: dict[str, str], log_path: str | Path, interval: float = 1.0):
        self.kubeconfig = str(kubeconfig)
        self.s3_env = s3_env
        self.log_path = Path(log_path)
        self.interval = interval
        self.proc: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        env = {
            **os.environ,
            **self.s3_env,
            "KUBECONFIG": self.kubeconfig,
            "LOOM_RECONCILE_INTERVAL": str(self.interval),
            "LOOM_WORKLOAD_IMAGE": "loom-workload:local",
            "PYTHONUNBUFFERED": "1",
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "loom.operator"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # kopf shuts down cleanly on SIGINT
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """An abrupt crash, for tests of restart convergence."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
