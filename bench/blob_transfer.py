"""Blob transfers: the Azure store against the raw SDK and the physical floor, on Azurite.

One file of BENCH_BLOB_MB megabytes (default 200) of random bytes, in the same run:

- upload: tandem's `BlobArtifactStore.upload_file` + `check_stored` (what `put_artifact` does
  for each file: blocks with Content-MD5 the service checks, the stored copy checked after)
  against azure-storage-blob's `upload_blob` at the same concurrency, without and with
  `validate_content` (the SDK's own checked upload), and the floor: reading the file;
- download: `download_file` against `download_blob(...).readinto`, and the floor: writing
  the same bytes to a file;
- artifact: `put_artifact` and `get_artifact` of an artifact whose model.onnx is that file
  (they move model.onnx and its tarball and verify the manifest and the tarball on each side)
  against the raw SDK moving the same files plus that local verification alone.

Azurite (npm `azurite`, installed by `make`) is started here on 127.0.0.1, in memory,
telemetry off, unless BENCH_AZURITE_URL names a running one. Rounds are interleaved (one of
each contender per round) and each figure is the median. Budget: tandem within 1.5x of the
SDK's checked transfer both ways, and of the SDK plus the local verification for artifacts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from ml import artifact
from ml.clouds.azure.common import AZURITE_ACCOUNT, AZURITE_KEY
from ml.clouds.azure.store import BlobArtifactStore

REPO = Path(__file__).resolve().parent.parent
AZURITE = REPO / "node_modules" / ".bin" / "azurite-blob"
MB = 1e6
SIZE_MB = int(os.environ.get("BENCH_BLOB_MB", "200"))
ROUNDS = 3
CONCURRENCY = 4
BUDGET = 1.5  # tandem's transfers within this factor of the SDK's checked ones
CHUNK = 8 * 1024 * 1024
CONTAINERS = {"data": "bench-data", "models": "bench-models", "captures": "bench-captures",
              "reports": "bench-reports"}  # fmt: skip


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def azurite(workspace: Path) -> Iterator[str]:
    """A Blob endpoint: BENCH_AZURITE_URL, or an Azurite started for this run."""
    if os.environ.get("BENCH_AZURITE_URL"):
        yield os.environ["BENCH_AZURITE_URL"]
        return
    if not AZURITE.exists():
        raise SystemExit(f"Azurite is not installed ({AZURITE}): run `npm install` (or `make`)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
        "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--silent",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=workspace, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("Azurite did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    finally:
        process.terminate()
        process.wait(10)


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def read_floor(path: Path) -> None:
    with path.open("rb", buffering=0) as handle:
        while handle.read(CHUNK):
            pass


def write_floor(data: bytes, path: Path) -> None:
    with path.open("wb") as handle:
        handle.write(data)


def sdk_upload(service: BlobServiceClient, path: Path, key: str, *, checked: bool) -> None:
    blob = service.get_blob_client(CONTAINERS["models"], key)
    with path.open("rb") as handle:
        blob.upload_blob(
            handle, overwrite=True, max_concurrency=CONCURRENCY, validate_content=checked
        )


def sdk_download(service: BlobServiceClient, key: str, path: Path) -> None:
    blob = service.get_blob_client(CONTAINERS["models"], key)
    with path.open("wb") as handle:
        blob.download_blob(max_concurrency=CONCURRENCY).readinto(handle)


def sealed_artifact(directory: Path, model: Path) -> list[Path]:
    """An artifact whose model.onnx is `model`; its files, manifest last."""
    directory.mkdir()
    shutil.copyfile(model, directory / artifact.ONNX)
    (directory / artifact.CARD).write_text(json.dumps({"run_id": "bench"}) + "\n")
    (directory / artifact.BASELINE).write_text('{"features": {}}\n')
    artifact.seal(directory)
    return [directory / n for n in (*artifact.CONTENT, artifact.TARBALL, artifact.MANIFEST)]


def verify_locally(directory: Path) -> None:
    """What every store's verified transfer checks on each side: the manifest, the tarball."""
    artifact.verify_tarball(directory / artifact.TARBALL, artifact.verify(directory))


def one_round(
    record: Callable[[str, float], None],
    service: BlobServiceClient,
    store: BlobArtifactStore,
    work: Path,
    round_: int,
) -> None:
    source, local = work / "payload.bin", work / "artifact"
    data = source.read_bytes()
    files = [local / n for n in (*artifact.CONTENT, artifact.TARBALL, artifact.MANIFEST)]
    key = f"artifacts/bench/round-{round_}"
    got, fetched = work / f"sdk-{round_}", work / f"tandem-{round_}"
    got.mkdir()

    record("upload floor: read the file", timed(lambda: read_floor(source)))
    record("upload sdk", timed(lambda: sdk_upload(service, source, "sdk", checked=False)))
    record(
        "upload sdk validate_content",
        timed(lambda: sdk_upload(service, source, "sdk", checked=True)),
    )
    record(
        "upload tandem (upload_file + check_stored)",
        timed(lambda: (store.upload_file(source, "t"), store.check_stored(source, "t"))),
    )
    record("download floor: write the file", timed(lambda: write_floor(data, work / "w")))
    # both read the blob tandem stored: the same blocks on the service's side
    record("download sdk", timed(lambda: sdk_download(service, "t", work / "d1")))
    record("download tandem", timed(lambda: store.download_file("t", work / "d2")))
    assert (work / "d2").read_bytes() == data
    record(
        "put_artifact sdk validate_content, same files",
        timed(lambda: [sdk_upload(service, f, f"sdk/{f.name}", checked=True) for f in files]),
    )
    record("put_artifact floor: verify locally", timed(lambda: verify_locally(local)))
    record("put_artifact tandem", timed(lambda: store.put_artifact(local, key)))
    record(
        "get_artifact sdk, same files",
        timed(lambda: [sdk_download(service, f"sdk/{f.name}", got / f.name) for f in files]),
    )
    record("get_artifact floor: verify locally", timed(lambda: verify_locally(got)))
    record("get_artifact tandem", timed(lambda: store.get_artifact(store.uri_for(key), fetched)))
    for directory in (got, fetched):
        shutil.rmtree(directory)


def measure(url: str, work: Path) -> dict[str, list[float]]:
    credential = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    service = BlobServiceClient(url, credential=credential)
    for name in CONTAINERS.values():
        with contextlib.suppress(ResourceExistsError):
            service.create_container(name)
    store = BlobArtifactStore(service, CONTAINERS, max_concurrency=CONCURRENCY)
    (work / "payload.bin").write_bytes(os.urandom(SIZE_MB * 1_000_000))
    sealed_artifact(work / "artifact", work / "payload.bin")
    figures: dict[str, list[float]] = {}
    for round_ in range(ROUNDS):
        one_round(lambda n, t: figures.setdefault(n, []).append(t), service, store, work, round_)
    return figures


PEERS = {
    "upload": "upload sdk validate_content",
    "download": "download sdk",
    "put_artifact": "put_artifact sdk validate_content, same files",
    "get_artifact": "get_artifact sdk, same files",
}


def report(figures: dict[str, list[float]], moved: dict[str, float]) -> list[bool]:
    """Each group's medians against its SDK peer. An artifact's peer is the SDK moving the
    same files plus the local verification every store's transfer does (artifact.verify and
    verify_tarball, the floor lines): what is left is the store's own overhead."""
    median = {name: statistics.median(times) for name, times in figures.items()}
    verdicts = []
    for group, peer in PEERS.items():
        names = [n for n in median if n.startswith(group)]
        floor = next(n for n in names if "floor" in n)
        if "verify" in floor:
            median[f"{group} sdk + verify locally"] = median[peer] + median[floor]
            names.append(peer := f"{group} sdk + verify locally")
        print(f"\n{group} ({moved[group]:.0f} MB), ratios to `{peer}`:")
        for name in names:
            rate = moved[group] / median[name]
            ratio = median[name] / median[peer]
            print(f"  {name:46s} {median[name]:7.3f} s {rate:7.0f} MB/s {ratio:6.2f}x")
        tandem = next(n for n in names if "tandem" in n)
        within = median[tandem] <= BUDGET * median[peer]
        verdicts.append(within)
        print(f"  tandem within {BUDGET}x of `{peer}`: {'yes' if within else 'NO'}")
    return verdicts


def main() -> None:
    print(f"Blob transfer of {SIZE_MB} MB, {ROUNDS} interleaved rounds, medians; {load()}")
    with tempfile.TemporaryDirectory() as tmp, azurite(Path(tmp)) as url:
        work = Path(tmp) / "work"
        work.mkdir()
        figures = measure(url, work)
        artifact_mb = (
            sum(
                (work / "artifact" / n).stat().st_size
                for n in (*artifact.CONTENT, artifact.TARBALL, artifact.MANIFEST)
            )
            / MB
        )
    moved = {"upload": SIZE_MB, "download": SIZE_MB} | dict.fromkeys(
        ("put_artifact", "get_artifact"), artifact_mb
    )
    verdicts = report(figures, moved)
    print(f"\n{load()}")
    print("budget met both ways" if all(verdicts) else "budget NOT met")


if __name__ == "__main__":
    main()
