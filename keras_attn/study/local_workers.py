"""`--workers N`: the grid's cells trained N at a time, by N processes on this machine.

The study process becomes the grid's chief (the same oracle the multi-machine grid
uses, on 127.0.0.1) and starts N workers, each the same command with
`KERASTUNER_TUNER_ID=worker<i>` and cores / N threads, so the processes share the cores
instead of oversubscribing them. The workers' output reaches the user through the
chief a whole line at a time, so two workers' lines never splice into one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO

from keras_attn.errors import UserError


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((ip, 0))
        return probe.getsockname()[1]


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Threads for each of `workers` processes so that together they use the cores once."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


# Set in every local worker's environment: its command still carries the chief's
# `--seeds auto` rule settings, which only the chief applies.
LOCAL_WORKER = "KERAS_ATTN_LOCAL_WORKER"


def is_local_worker() -> bool:
    return os.environ.get(LOCAL_WORKER) == "1"


def worker_env(index: int, ip: str, port: int, threads: int) -> dict[str, str]:
    """The environment of worker `index`: Keras Tuner's worker variables and its threads."""
    return {
        **os.environ,
        "KERASTUNER_TUNER_ID": f"worker{index}",
        LOCAL_WORKER: "1",
        "KERASTUNER_ORACLE_IP": ip,
        "KERASTUNER_ORACLE_PORT": str(port),
        # TensorFlow's own pools and oneDNN's OpenMP pool.
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": str(threads),
    }


class LocalWorkers:
    """Starts the workers on enter; on exit waits for them (or stops them on an error)."""

    def __init__(self, workers: int, argv: Sequence[str], ip: str, port: int):
        self.workers, self.argv, self.ip, self.port = workers, list(argv), ip, port
        self.processes: list[subprocess.Popen] = []
        self.relays: list[threading.Thread] = []
        self.lock = threading.Lock()

    def relay(self, source: IO[str], target: IO[str]) -> None:
        # A worker's pipe, copied line by line; the lock keeps each line whole.
        for line in source:
            with self.lock:
                target.write(line)
                target.flush()
        source.close()

    def __enter__(self) -> LocalWorkers:
        threads = threads_per_worker(self.workers)
        # The same command, each process one worker of the grid (the last --workers wins).
        command = [sys.executable, "-m", "keras_attn.study", *self.argv, "--workers", "1"]
        for index in range(self.workers):
            env = worker_env(index, self.ip, self.port, threads)
            process = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            self.processes.append(process)
            for source, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                thread = threading.Thread(target=self.relay, args=(source, target), daemon=True)
                thread.start()
                self.relays.append(thread)
        print(
            f"[study] {self.workers} local workers, {threads} thread(s) each, "
            f"grid served on {self.ip}:{self.port}",
            flush=True,
        )
        return self

    def alive(self) -> bool:
        return any(process.poll() is None for process in self.processes)

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:  # the chief failed or was interrupted: stop the workers too
            for process in self.processes:
                if process.poll() is None:
                    process.terminate()
        codes = [process.wait() for process in self.processes]
        for thread in self.relays:
            thread.join()
        if kind is None and any(codes):
            failed = ", ".join(f"worker{i} ({c})" for i, c in enumerate(codes) if c)
            raise UserError(f"local workers exited with an error: {failed}")
