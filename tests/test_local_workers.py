"""The pieces of `--workers N` that need no grid: threads, environment, whole-line output."""

import io
import os
import subprocess
import sys
import threading

from keras_attn.study import local_workers


def test_threads_are_shared_out_and_never_zero():
    assert local_workers.threads_per_worker(2, cores=16) == 8
    assert local_workers.threads_per_worker(3, cores=2) == 1


def test_a_worker_environment_names_its_worker_and_its_threads():
    env = local_workers.worker_env(1, "127.0.0.1", 5000, 4)
    assert env["KERASTUNER_TUNER_ID"] == "worker1"
    assert env["KERASTUNER_ORACLE_PORT"] == "5000"
    assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "4"


def test_two_processes_writing_long_lines_at_once_reach_the_user_line_by_line():
    # Each child writes its lines in small unflushed pieces, the way a splice happened
    # in CI ("channel, seed 1[study] worker1: done; ..."); relayed, every line is whole.
    child = (
        "import sys\n"
        "for i in range(300):\n"
        "    for piece in ('[study] {w}: ', 'cell ', str(i), ' of a long line' * 20):\n"
        "        sys.stdout.write(piece); sys.stdout.flush()\n"
        "    sys.stdout.write('\\n'); sys.stdout.flush()\n"
    )
    workers = local_workers.LocalWorkers(2, [], "127.0.0.1", 0)
    out = io.StringIO()
    for name in ("w0", "w1"):
        process = subprocess.Popen(
            [sys.executable, "-c", child.replace("{w}", name)],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        thread = threading.Thread(target=workers.relay, args=(process.stdout, out))
        thread.start()
        workers.processes.append(process)
        workers.relays.append(thread)
    for process, thread in zip(workers.processes, workers.relays, strict=True):
        assert process.wait() == 0
        thread.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 600
    expected = {
        f"[study] {w}: cell {i}" + " of a long line" * 20 for w in ("w0", "w1") for i in range(300)
    }
    assert set(lines) == expected
