"""The local server under load: p50/p99 latency and requests/s at 1, 8 and 32 keep-alive
clients, each contender in its own process on 127.0.0.1, driven from this process.

Contenders, in the same run and on the same credit GBM (examples/credit.toml) and rows:
- tandem: deploy/server.py (asyncio, small bodies answered on the event loop);
- tandem, model calls on the worker pool (the same server with inline answers off: what
  answering small bodies on the event loop saves);
- `mlflow models serve` on the same fitted pipeline (POST /invocations, dataframe_records),
  run by the Python in BENCH_MLFLOW_PYTHON (an environment with mlflow), else by this one
  when mlflow imports here (the `bench` extra); skipped with a note otherwise;
- the floor: a bare asyncio protocol that answers every request with a fixed 200 (the
  loopback, the kernel and this client, with no HTTP parsing or model at all).

The clients are threads on raw keep-alive sockets, each sending one request at a time; every
level is bounded by REQUESTS per client and SECONDS. Budget: tandem p50 <= 0.5 ms at one
client and >= 20x faster than MLflow, throughput growing from 1 to 8 clients, zero errors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.latency import credit_gbm, request_bodies

REPO = Path(__file__).resolve().parent.parent
CLIENTS = (1, 8, 32)
SECONDS = 3.0  # per level and contender, at most
REQUESTS = 20_000  # per client and level, at most
WARMUP = 300
BUDGET_P50_MS = 0.5
BUDGET_VS_MLFLOW = 20.0
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)

TANDEM = """
import sys
from deploy.inference import Model
from deploy.server import Server
from deploy.service import Service
server = Server(Service(Model.load(sys.argv[1], version=1)), port=int(sys.argv[2]),
                inline_body_bytes=int(sys.argv[3]))
server.serve_forever()
"""

FLOOR = """
import asyncio, sys
ANSWER = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: 2\\r\\n\\r\\n{}"
class Fixed(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\\r\\n\\r\\n")
            if not sep:
                return
            length = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.transport.write(ANSWER)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Fixed, "127.0.0.1", int(sys.argv[1]))
    for s in server.sockets:
        s.setsockopt(6, 1, 1)
    await asyncio.Event().wait()
asyncio.run(main())
"""

SAVE_MLFLOW = """
import pickle, sys, warnings
import mlflow.sklearn
warnings.simplefilter("ignore")
with open(sys.argv[1], "rb") as f:
    pipeline = pickle.load(f)
mlflow.sklearn.save_model(pipeline, sys.argv[2], serialization_format="cloudpickle",
                          pyfunc_predict_fn="predict_proba")
"""


@dataclass
class Level:
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process(args: list[str], ready_url: str, timeout: float = 180.0) -> Iterator[None]:
    """Run a server process (its own session, so its children stop with it) until it answers
    `ready_url`. Its interpreter's bin directory leads PATH (mlflow runs `uvicorn`)."""
    path = f"{Path(args[0]).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": path}
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"{args[:3]} exited: {child.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args[:3]} did not answer {ready_url}") from None
                time.sleep(0.2)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        child.stderr.close()


def requests_for(path: str, bodies: list[bytes]) -> list[bytes]:
    return [
        (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]


def _client(port: int, requests: list[bytes], count: int, deadline: float, out: list) -> None:
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        out.append((latencies, 1))
        return
    buffer = b""
    with sock:
        for i in range(count):
            if clock() > deadline:
                break
            started = clock()
            try:
                sock.sendall(requests[i % len(requests)])
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                match = _LENGTH.search(head)
                length = int(match.group(1)) if match else 0
                while len(rest) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    rest += chunk
                buffer = rest[length:]
                if head[9:12] != b"200":
                    errors += 1
            except OSError:
                errors += 1
                break
            latencies.append(clock() - started)
    out.append((latencies, errors))


def load_level(port: int, requests: list[bytes], clients: int, count: int = REQUESTS) -> Level:
    out: list = []
    deadline = time.perf_counter() + SECONDS
    threads = [
        threading.Thread(
            target=_client, args=(port, requests[i::clients] or requests, count, deadline, out)
        )
        for i in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies = sorted(x for got, _ in out for x in got)
    errors = sum(e for _, e in out)
    if not latencies:
        return Level(clients, 0, errors, elapsed, float("nan"), float("nan"))
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return Level(clients, len(latencies), errors, elapsed,
                 statistics.median(latencies) * 1e3, p99 * 1e3)  # fmt: skip


def run(title: str, port: int, requests: list[bytes]) -> list[Level]:
    load_level(port, requests, 1, WARMUP)
    levels = [load_level(port, requests, n) for n in CLIENTS]
    print(f"\n{title}")
    for level in levels:
        print(
            f"  {level.clients:3d} clients: p50 {level.p50_ms:7.3f} ms  p99 {level.p99_ms:7.3f} ms"
            f"  {level.per_second:8.0f} req/s  {level.requests:6d} requests, "
            f"{level.errors} errors"
        )
    return levels


def loadavg() -> str:
    return "/proc/loadavg: " + Path("/proc/loadavg").read_text().strip()


def main() -> None:
    print(f"local server under load, {CLIENTS} keep-alive clients, <= {SECONDS:g} s and "
          f"<= {REQUESTS} requests per client per level; {loadavg()}")  # fmt: skip
    mlflow_python = os.environ.get("BENCH_MLFLOW_PYTHON", "").strip() or (
        sys.executable if importlib.util.find_spec("mlflow") else ""
    )
    results: dict[str, list[Level]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subject = credit_gbm(Path(tmp))
        bodies = request_bodies(subject)
        tandem_requests = requests_for("/predict", bodies)

        for title, inline in [("tandem", 16 * 1024), ("tandem, model calls on the pool", -1)]:
            port = free_port()
            args = [sys.executable, "-c", TANDEM, str(subject.model_dir), str(port), str(inline)]
            with process(args, f"http://127.0.0.1:{port}/health"):
                results[title] = run(title, port, tandem_requests)

        port = free_port()
        with process([sys.executable, "-c", FLOOR, str(port)], f"http://127.0.0.1:{port}/"):
            results["floor"] = run("floor: fixed answer, bare asyncio protocol", port,
                                   tandem_requests)  # fmt: skip

        if not mlflow_python:
            print("\nmlflow models serve: skipped (set BENCH_MLFLOW_PYTHON to a Python with "
                  "mlflow, e.g. a venv made with pip install mlflow)")  # fmt: skip
        else:
            pickled = Path(tmp) / "pipeline.pkl"
            pickled.write_bytes(pickle.dumps(subject.pipeline))
            saved = Path(tmp) / "mlflow-credit"
            subprocess.run([mlflow_python, "-c", SAVE_MLFLOW, str(pickled), str(saved)],
                           check=True, capture_output=True)  # fmt: skip
            records = [b'{"dataframe_records": ' + b[len(b'{"instances": ') :] for b in bodies]
            port = free_port()
            args = [mlflow_python, "-m", "mlflow", "models", "serve", "-m", str(saved),
                    "-p", str(port), "-h", "127.0.0.1", "--env-manager", "local"]  # fmt: skip
            with process(args, f"http://127.0.0.1:{port}/ping"):
                results["mlflow"] = run("mlflow models serve (1 uvicorn worker, its default)",
                                        port, requests_for("/invocations", records))  # fmt: skip

    tandem = results["tandem"]
    print(f"\n{loadavg()}")
    pool = results["tandem, model calls on the pool"]
    print(f"inline vs pool at 1 client: p50 {tandem[0].p50_ms:.3f} vs {pool[0].p50_ms:.3f} ms; "
          f"at 32: {tandem[2].per_second:.0f} vs {pool[2].per_second:.0f} req/s")  # fmt: skip
    floor = results["floor"]
    print(f"tandem / floor at 1 client: p50 {tandem[0].p50_ms / floor[0].p50_ms:.2f}x")
    verdicts = {
        f"p50 <= {BUDGET_P50_MS} ms at one client": tandem[0].p50_ms <= BUDGET_P50_MS,
        "throughput grows from 1 to 8 clients": tandem[1].per_second > tandem[0].per_second,
        "zero errors at every level": all(level.errors == 0 for level in tandem),
    }
    if "mlflow" in results:
        mlflow = results["mlflow"]
        for a, b in zip(tandem, mlflow, strict=True):
            print(f"mlflow / tandem at {a.clients:2d} clients: p50 {b.p50_ms / a.p50_ms:6.1f}x, "
                  f"throughput tandem {a.per_second / b.per_second:5.1f}x")  # fmt: skip
        verdicts[f">= {BUDGET_VS_MLFLOW:g}x MLflow at one client (p50)"] = (
            mlflow[0].p50_ms >= BUDGET_VS_MLFLOW * tandem[0].p50_ms
        )
    for name, ok in verdicts.items():
        print(f"  {'met' if ok else 'NOT MET'}: {name}")


if __name__ == "__main__":
    main()
