"""What any cloud's training job needs shipped: the code it runs and the data it reads.

`source_files` + `sourcedir_tarball`: the `ml` package, the vocabulary, the inference core and
the spec, as one reproducible tar.gz (same code, same bytes). `stage_dataset`: a dataset the
job cannot read where it is (a local file, a built-in source) copied into the stack's store,
content-addressed, so the same rows are uploaded once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path

from contract import layout
from ml import artifact, data
from ml.clouds.base import ArtifactStore
from ml.spec import ModelSpec

SPEC_DIR = "specs"
CLOUD_SCHEMES = ("s3", "https", "abfss", "azureml")  # a job reads these where they are


def spec_path_in_job(spec: ModelSpec) -> str:
    """Where the spec lands inside the code tarball (relative to the code directory)."""
    return f"{SPEC_DIR}/{spec.name}.json"


def spec_bytes(spec: ModelSpec) -> bytes:
    return (json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def _package_files(package: Path, prefix: str) -> dict[str, bytes]:
    return {
        f"{prefix}/{p.relative_to(package).as_posix()}": p.read_bytes()
        for p in sorted(package.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


def source_files(spec: ModelSpec) -> dict[str, bytes]:
    """What a training job runs: `ml`, `contract`, the inference core it imports, the spec."""
    import contract
    import deploy.inference
    import ml

    files = {
        **_package_files(Path(ml.__file__).resolve().parent, "ml"),
        **_package_files(Path(contract.__file__).resolve().parent, "contract"),
    }
    inference = Path(deploy.inference.__file__).resolve()
    files["deploy/__init__.py"] = (inference.parent / "__init__.py").read_bytes()
    files["deploy/inference.py"] = inference.read_bytes()
    files[spec_path_in_job(spec)] = spec_bytes(spec)
    return files


def sourcedir_tarball(files: Mapping[str, bytes]) -> bytes:
    return artifact.targz(files)


def runtime_requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """The project's runtime dependencies, and those of `extras` (e.g. ``("mlflow",)``), for
    an image that must pip-install them."""
    from importlib import metadata

    try:
        requires = metadata.requires("tandem-mlops") or []
    except metadata.PackageNotFoundError:
        requires = []
    wanted = []
    for requirement in requires:
        name, _, marker = requirement.partition(";")
        if "extra ==" not in marker:
            wanted.append(requirement)
        elif any(f'extra == "{extra}"' in marker for extra in extras):
            wanted.append(name.strip())
    return wanted


def stage_dataset(store: ArtifactStore, spec: ModelSpec, data_uri: str) -> str:
    """A URI the job can read: a store URI as given, else the rows uploaded once by content."""
    scheme = data_uri.split("://", 1)[0] if "://" in data_uri else ""
    if scheme in CLOUD_SCHEMES:
        return data_uri
    frame = data.load_frame(data_uri, store, spec.dataset.format)
    digest = data.content_hash(frame).split(":", 1)[-1]
    suffix = "csv" if spec.dataset.format == "csv" else "parquet"
    key = layout.dataset_key(spec.name, digest, suffix)
    if not store.exists(key):
        buffer = io.BytesIO()
        if suffix == "csv":
            frame.to_csv(buffer, index=False)
        else:
            frame.to_parquet(buffer, index=False)
        store.put_bytes(key, buffer.getvalue())
    return store.uri_for(key)
