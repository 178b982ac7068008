"""Keras Tuner's distributed mode: each process's role, and the chief's oracle server.

Roles come from Keras Tuner's variables, `KERASTUNER_TUNER_ID` ("chief" or
"worker0", "worker1", ...), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`.
The searches (`python -m tuning`) and the study's grid (`python -m keras_attn.study`)
both scale out across machines this way.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent import futures

from keras_attn.errors import UserError


def distributed_role() -> tuple[str, str | None, int | None]:
    """("single" | "chief" | "worker", oracle IP, oracle port) from Keras Tuner's variables."""
    ip = os.environ.get("KERASTUNER_ORACLE_IP")
    if not ip:
        return "single", None, None
    port_text = os.environ.get("KERASTUNER_ORACLE_PORT")
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    if not port_text:
        raise UserError("KERASTUNER_ORACLE_IP is set but KERASTUNER_ORACLE_PORT is not")
    if not tuner_id:
        raise UserError(
            "KERASTUNER_ORACLE_IP is set but KERASTUNER_TUNER_ID is not "
            "(chief on one machine, worker0, worker1, ... on the others)"
        )
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise UserError(f"KERASTUNER_ORACLE_PORT must be a port number, got {port_text!r}")
    # gRPC honours https_proxy (set for downloads, say): never proxy the oracle's calls.
    old = os.environ.get("no_grpc_proxy")  # noqa: SIM112  (gRPC reads the lower-case name)
    os.environ["no_grpc_proxy"] = ",".join(filter(None, (old, ip)))  # noqa: SIM112
    # Keras Tuner's own rule: a tuner id containing "chief" runs the oracle.
    return ("chief" if "chief" in tuner_id else "worker"), ip, port


def check_port_free(ip: str, port: int) -> None:
    """Fails with one line if the chief could not listen on `ip:port`."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as err:
            raise UserError(
                f"the chief cannot listen on {ip}:{port} ({err.strerror}); another process "
                "uses the port (choose another KERASTUNER_ORACLE_PORT) or the address is not "
                "this machine's"
            ) from None


def serve_oracle(tuner, ip: str, port: int, poll_seconds: float = 0.5, workers_alive=None) -> None:
    """The chief: serves the tuner's oracle to the workers until the search is over.

    What `tuner.search()` does on a chief in Keras Tuner 1.4.8 (its `OracleServicer`),
    with two differences: a port that cannot be bound is an error rather than a server
    that never answers (gRPC would otherwise share the port with SO_REUSEPORT), and the
    end is noticed within `poll_seconds` rather than 20 s. The search is over once the
    oracle has told every worker that asked for a trial to stop and no trial is running.
    `workers_alive()`, when given (workers this process started), replaces that rule: the
    serving ends once it says False, so a worker that died mid-trial is not waited for
    forever, and one still starting when the last cell went out (every cell of a finished
    grid goes out at once) finds a server to tell it to stop instead of waiting for one.
    """
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 0)]
    )
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{ip}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserError(f"the chief cannot listen on {ip}:{port} (port in use?)")
    tuner.save()
    server.start()
    print(f"Chief: oracle listening on {ip}:{port}; waiting for workers", flush=True)
    try:
        while True:
            if workers_alive is not None:
                if not workers_alive():
                    break
            elif servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle):
                break
            time.sleep(poll_seconds)
    finally:
        server.stop(grace=2)
