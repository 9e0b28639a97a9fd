"""The model artifact: build it, checksum it, pack it, load and verify it.

One directory: `model.onnx` (what endpoints serve), `model_card.json`, `baseline.json`,
`MANIFEST.json` (sha256 of each of those), plus `model.tar.gz` of the four (the SageMaker
convention; reproducible bytes, so re-uploading the same artifact is a no-op).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.inference import (
    MANIFEST,
    Column,
    IntegrityError,
    Model,
    packed_inputs,
    safe_names,
    sha256_file,
    verify_manifest,
)
from ml.errors import ArtifactIntegrityError

ONNX, CARD, BASELINE, TARBALL = "model.onnx", "model_card.json", "baseline.json", "model.tar.gz"
CONTENT = (ONNX, CARD, BASELINE)

# Every estimator is exported to the same opsets, so a graph runs wherever its runtime does.
# 15: onnxmltools (XGBoost, LightGBM) converts to no newer default opset (1.16 refuses 18),
# and every skl2onnx and onnxruntime of pyproject's ranges supports it; ai.onnx.ml 3 holds
# the tree ensembles.
TARGET_OPSET = {"": 15, "ai.onnx.ml": 3}
METADATA_PREFIX = "tandem."


def onnx_inputs(spec: Any) -> list[dict[str, Any]]:
    """The inputs `to_onnx` gives the graph (recorded in the card as `onnx_inputs`): one
    [N, n] float tensor for the numeric features, one [N, 1] string tensor per categorical."""
    return packed_inputs([Column(f.name, f.type == "numeric") for f in spec.features])


def input_names(spec: Any) -> dict[str, dict[str, str]]:
    """Each feature's name inside model.onnx, both ways (recorded in the card and metadata)."""
    safe = safe_names(spec.feature_names)
    return {"by_column": safe, "by_onnx_name": {v: k for k, v in safe.items()}}


def to_onnx(pipeline: Any, spec: Any, metadata: Mapping[str, str] | None = None) -> bytes:
    """Convert the fitted scikit-learn pipeline, with the inputs of `onnx_inputs(spec)`.

    skl2onnx names one input per column; a single-row request then pays for n tiny tensors
    (~30 µs to build and ~3.5x the run time on 30 features). The converted graph concatenates
    the numeric columns first thing: that Concat's consumers read one [N, n] input instead
    (any other use of a numeric column is fed by one Split of it), and the Gather that copies
    each string input's only column goes too. Measured on this pipeline's 30-feature logistic
    regression, one run takes ~10 µs packed, ~23 µs with a Split, ~49 µs with 30 inputs.
    """
    from skl2onnx import to_onnx as convert
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [
        (f.name, FloatTensorType([None, 1]) if f.type == "numeric" else StringTensorType([None, 1]))
        for f in spec.features
    ]
    register_converters(pipeline)
    # zipmap off: probabilities come back as a plain float tensor, cheap to read (the option
    # reaches an XGBoost or LightGBM classifier too: register_converters declares it)
    classifier = hasattr(pipeline, "classes_")
    onnx_model = convert(
        pipeline,
        initial_types=types,
        options={id(pipeline): {"zipmap": False}} if classifier else None,
        target_opset=dict(TARGET_OPSET),
    )
    # skl2onnx renames an input that is not an identifier its own way: name them ours
    safe = safe_names(spec.feature_names)
    given = [i.name for i in onnx_model.graph.input]
    rename_graph_inputs(
        onnx_model, {g: safe[f.name] for g, f in zip(given, spec.features, strict=True)}
    )
    for layout in onnx_inputs(spec):
        if layout["dtype"] == "float32":
            pack_numeric(onnx_model, [safe[c] for c in layout["columns"]], layout["name"])
    drop_column_gathers(onnx_model)
    for key, value in sorted((metadata or {}).items()):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    return onnx_model.SerializeToString()


def register_converters(pipeline: Any) -> None:
    """Teach skl2onnx the XGBoost and LightGBM estimators (onnxmltools' converters, skl2onnx's
    shape calculators), so a pipeline ending in one converts in one call. Only when the
    pipeline holds one: the extras stay unimported otherwise."""
    steps = [step for _, step in pipeline.steps] if hasattr(pipeline, "steps") else [pipeline]
    libraries = {type(step).__module__.split(".")[0] for step in steps}
    if not libraries & {"xgboost", "lightgbm"}:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if "xgboost" in libraries:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(
            XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=options,
        )
        update_registered_converter(
            XGBRegressor,
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            convert_xgboost,
        )
    if "lightgbm" in libraries:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(
            LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options=options,
        )
        update_registered_converter(
            LGBMRegressor,
            "LightGbmLGBMRegressor",
            calculate_linear_regressor_output_shapes,
            convert_lightgbm,
        )


def tandem_version() -> str:
    """The installed tandem-mlops version (the package's own when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("tandem-mlops")
    except metadata.PackageNotFoundError:
        from ml import __version__

        return __version__


def onnx_metadata(
    *,
    labels: list[Any] | None,
    input_schema: Mapping[str, Any],
    inputs: list[dict[str, Any]],
    input_names: Mapping[str, Any],
    task: str,
    run_id: str,
    missing_token: str,
) -> dict[str, str]:
    """`metadata_props` of model.onnx: what a runtime outside Tandem needs to serve it alone.

    `labels` maps each class index of the probability output to the spec's own label (empty
    for a regression, whose output is the predicted value). The
    registry's version number is not in here: it is assigned when the sealed artifact is
    registered, and the artifact is never rewritten after (its checksums are its identity);
    `run_id` names the run, and the registry maps run ids to versions.
    """

    def text(value: Any) -> str:
        return json.dumps(finite(value), sort_keys=True, default=str, allow_nan=False)

    entries = {
        "labels": text({str(index): label for index, label in enumerate(labels or [])}),
        "missing_token": missing_token,
        "input_schema": text(input_schema),
        "onnx_inputs": text(inputs),
        "input_names": text(input_names),
        "task": task,
        "tandem_version": tandem_version(),
        "run_id": run_id,
        "model_version": "assigned by the registry at registration (see run_id)",
    }
    return {METADATA_PREFIX + key: value for key, value in entries.items()}


def rename_graph_inputs(model: Any, renamed: Mapping[str, str]) -> None:
    """Rename graph inputs (in place) and every node input that reads them."""
    renamed = {k: v for k, v in renamed.items() if k != v}
    for graph_input in model.graph.input:
        graph_input.name = renamed.get(graph_input.name, graph_input.name)
    _rename_inputs(model.graph.node, renamed)


def pack_numeric(model: Any, columns: list[str], name: str) -> None:
    """Replace the [N, 1] float inputs `columns` of `model` (in place) by one [N, n] input."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    outputs = {o.name for o in graph.output}
    nodes, renamed = [], {}
    for node in graph.node:
        if (
            node.op_type == "Concat"
            and list(node.input) == columns
            and _attribute(node, "axis") in (1, -1)
            and node.output[0] not in outputs
        ):
            renamed[node.output[0]] = name  # its consumers read the packed input itself
        else:
            nodes.append(node)
    _rename_inputs(nodes, renamed)
    if {i for n in nodes for i in n.input} & set(columns):
        ones = [1] * len(columns)
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if opset >= 13:  # Split takes its sizes as an input from opset 13 on
            sizes = f"{name}_split_sizes"
            graph.initializer.append(
                helper.make_tensor(sizes, TensorProto.INT64, [len(ones)], ones)
            )
            nodes.insert(0, helper.make_node("Split", [name, sizes], columns, axis=1))
        else:
            nodes.insert(0, helper.make_node("Split", [name], columns, axis=1, split=ones))
    del graph.node[:]
    graph.node.extend(nodes)
    others = [i for i in graph.input if i.name not in columns]
    del graph.input[:]
    graph.input.extend(
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, len(columns)]), *others]
    )
    onnx.checker.check_model(model)


def drop_column_gathers(model: Any) -> None:
    """Remove the Gathers skl2onnx puts after each [N, 1] string input to select its only
    column (a copy of every string on every request): their consumers read the input."""
    from onnx import numpy_helper

    graph = model.graph
    single = {
        i.name
        for i in graph.input
        if len(i.type.tensor_type.shape.dim) == 2 and i.type.tensor_type.shape.dim[1].dim_value == 1
    }
    zero = {
        t.name for t in graph.initializer if numpy_helper.to_array(t).reshape(-1).tolist() == [0]
    }
    outputs = {o.name for o in graph.output}
    nodes, renamed = [], {}
    for node in graph.node:
        if (
            node.op_type == "Gather"
            and node.input[0] in single
            and node.input[1] in zero
            and _attribute(node, "axis") == 1
            and node.output[0] not in outputs
        ):
            renamed[node.output[0]] = node.input[0]
        else:
            nodes.append(node)
    _rename_inputs(nodes, renamed)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]  # the Gathers' indices go too
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _rename_inputs(nodes: list[Any], renamed: Mapping[str, str]) -> None:
    for node in nodes:
        for i, value in enumerate(node.input):
            if value in renamed:
                node.input[i] = renamed[value]


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON (RFC 8259): a NaN or infinity is written as null, never as `NaN`."""
    text = json.dumps(finite(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    path.write_text(text + "\n")


def finite(value: Any) -> Any:
    """`value` with every non-finite float (numpy's too) replaced by None, recursively."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def seal(directory: Path) -> Path:
    """Write MANIFEST.json and model.tar.gz for an artifact directory; return the tarball."""
    directory = Path(directory)
    files = {name: sha256_file(directory / name) for name in CONTENT}
    write_json(directory / MANIFEST, {"files": files, "algorithm": "sha256"})
    return pack(directory)


def targz(files: Mapping[str, bytes]) -> bytes:
    """A reproducible tar.gz (sorted names, zero mtimes, no owner): same files, same bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, filename="") as gz:
        gz.write(buffer.getvalue())
    return packed.getvalue()


def pack(directory: Path) -> Path:
    """model.tar.gz of the sealed files (reproducible, so re-storing it is a no-op)."""
    target = directory / TARBALL
    target.write_bytes(
        targz({name: (directory / name).read_bytes() for name in (*CONTENT, MANIFEST)})
    )
    return target


def verify_tarball(tarball: Path, files: Mapping[str, str]) -> None:
    """model.tar.gz must hold exactly the manifest's content, and be whole: the gzip stream is
    read to its end, so a damaged trailer (CRC, length) is refused too. Names what differs."""
    try:
        unpacked = gzip.decompress(Path(tarball).read_bytes())
        with tarfile.open(fileobj=io.BytesIO(unpacked), mode="r:") as tar:
            members = {m.name: m for m in tar.getmembers()}
            extra = sorted(set(members) - {*files, MANIFEST})
            if extra:
                raise ArtifactIntegrityError(
                    f"{TARBALL}: holds files the manifest does not list: {extra}"
                )
            for name, expected in sorted(files.items()):
                member = members.get(name)
                handle = tar.extractfile(member) if member and member.isfile() else None
                if handle is None:
                    raise ArtifactIntegrityError(f"{TARBALL}: {name} is missing from the tarball")
                if hashlib.sha256(handle.read()).hexdigest() != expected:
                    raise ArtifactIntegrityError(f"{TARBALL}: {name} differs from the manifest")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArtifactIntegrityError(f"{TARBALL}: damaged ({exc})") from None


def unpack(tarball: Path, dest: Path) -> Path:
    """Extract a model.tar.gz (only the artifact's own regular files) and verify it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    own = {*CONTENT, MANIFEST}
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name in own and m.isfile()]
        tar.extractall(dest, members=members, filter="data")
    verify(dest)
    return dest


def verify(directory: Path) -> dict[str, str]:
    """Check every file against MANIFEST.json; the error names the file that fails."""
    try:
        return verify_manifest(Path(directory))
    except IntegrityError as exc:
        raise ArtifactIntegrityError(f"{directory}: {exc}") from None


@dataclass
class Artifact:
    """A verified artifact directory, loaded."""

    directory: Path
    card: dict[str, Any]
    baseline: dict[str, Any]
    model: Model


def load(directory: Path) -> Artifact:
    directory = Path(directory)
    verify(directory)
    model = Model.load(directory, verify=False)  # verified just above
    baseline = json.loads((directory / BASELINE).read_text())
    return Artifact(directory, model.card, baseline, model)
