#!/usr/bin/env python3
"""`train`: the entry point of Tandem's training image (standard library only).

SageMaker starts a custom training image as ``docker run IMAGE train``; the Dockerfile
installs this file as ``/usr/local/bin/train``. It does what SageMaker's training toolkit
does for script mode, only as far as Tandem needs it:

1. Read ``hyperparameters.json`` from the input config directory. SageMaker writes every
   value as a string and the SDKs JSON-encode them, so each value is JSON-decoded (a value
   that is not JSON stays the string it is).
2. Put the code in place: ``sagemaker_submit_directory`` is a local ``.tar.gz`` (with
   network isolation the code arrives as the ``code`` input channel, at
   ``/opt/ml/input/data/code/sourcedir.tar.gz``) or a local directory, and goes to
   ``/opt/ml/code``. An ``s3://`` URI is refused with a message saying why: downloading it
   needs the network and an S3 client, and this image runs isolated with neither.
3. Set the ``SM_*`` variables the toolkit sets, where they are unset: ``SM_MODEL_DIR``,
   ``SM_INPUT_DIR``, ``SM_INPUT_CONFIG_DIR``, ``SM_OUTPUT_DIR``, ``SM_OUTPUT_DATA_DIR``,
   ``SM_CHANNELS`` and ``SM_CHANNEL_<NAME>`` for each channel (each directory under
   ``input/data``, and each channel ``inputdataconfig.json`` names), ``SM_HPS``,
   ``SM_USER_ARGS``, ``SM_USER_ENTRY_POINT``, ``SM_MODULE_DIR``; and
   ``TRAINING_JOB_NAME`` from ``sagemaker_job_name`` when SageMaker has not set it.
4. Run ``python <code>/<sagemaker_program> --key value ...``, one pair for every
   hyperparameter not starting with ``sagemaker_``, sorted by key, values rendered as the
   toolkit renders them (``str`` of the decoded value; a mapping as ``k=v,k=v``), in the
   code directory with ``PYTHONPATH=<code>``. Its output goes straight to the job's logs.
5. Exit with the program's exit code. On failure, write the end of its stderr to
   ``/opt/ml/output/failure``: SageMaker reports the first 1024 characters of that file as
   the job's ``FailureReason``
   (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo-output.html).

``SIGTERM`` (``StopTrainingJob``, ``MaxRuntimeInSeconds``) is passed on to the program. As
PID 1 of the container, this process would otherwise ignore it until SageMaker's SIGKILL.

Every path derives from one base directory, ``SAGEMAKER_BASE_DIR`` (the toolkit's own name
for it; default ``/opt/ml``), so the same file runs under a temporary directory in tests;
a ``/opt/ml/...`` path in the hyperparameters is then read under that directory.
``SM_INPUT_DIR``, ``SM_INPUT_CONFIG_DIR``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DIR`` and
``SM_OUTPUT_DATA_DIR``, when set, override their directory (the failure file is
``$SM_OUTPUT_DIR/failure``).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
PROGRAM = "sagemaker_program"
SUBMIT_DIRECTORY = "sagemaker_submit_directory"
JOB_NAME = "sagemaker_job_name"
RESERVED_PREFIX = "sagemaker_"
# SageMaker keeps the first 1024 characters of the failure file as FailureReason.
FAILURE_REASON_MAX = 1024
STDERR_TAIL_LINES = 50
EXIT_SETUP_ERROR = 2
SYNTAX = "usage: train  (SageMaker runs `docker run IMAGE train`)"


class SetupError(Exception):
    """The job cannot start; the message is its FailureReason."""


@dataclass(frozen=True)
class Layout:
    """The /opt/ml tree of a training container."""

    base: Path
    input_dir: Path
    config_dir: Path
    data_dir: Path
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    code_dir: Path

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def rebase(self, path: Path) -> Path:
        """A container path (``/opt/ml/...``, as a job's hyperparameters name them) under
        this layout's base directory; the same path when the base is ``/opt/ml``."""
        default = Path(DEFAULT_BASE_DIR)
        if self.base != default and path.is_relative_to(default):
            return self.base / path.relative_to(default)
        return path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Layout:
        base = Path(env.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR)
        input_dir = Path(env.get("SM_INPUT_DIR") or base / "input")
        output_dir = Path(env.get("SM_OUTPUT_DIR") or base / "output")
        return cls(
            base=base,
            input_dir=input_dir,
            config_dir=Path(env.get("SM_INPUT_CONFIG_DIR") or input_dir / "config"),
            data_dir=input_dir / "data",
            model_dir=Path(env.get("SM_MODEL_DIR") or base / "model"),
            output_dir=output_dir,
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR") or output_dir / "data"),
            code_dir=base / "code",
        )


# -- hyperparameters ---------------------------------------------------------------------
def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def read_hyperparameters(config_dir: Path) -> dict[str, Any]:
    path = config_dir / "hyperparameters.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SetupError(f"{path} does not exist: is this a SageMaker training job?") from None
    except (OSError, ValueError) as exc:
        raise SetupError(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise SetupError(f"{path} must hold a JSON object, not {type(raw).__name__}")
    return {str(key): _decode(value) for key, value in raw.items()}


def _render(value: Any) -> str:
    """A value on the command line, as the training toolkit's ``to_cmd_args`` writes it."""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return "" if value is None else str(value)


def program_arguments(hyperparameters: Mapping[str, Any]) -> list[str]:
    """``--key value`` for each user hyperparameter (``-k`` for a one-letter key), sorted."""
    args: list[str] = []
    for key in sorted(k for k in hyperparameters if not k.startswith(RESERVED_PREFIX)):
        args += [f"--{key}" if len(key) > 1 else f"-{key}", _render(hyperparameters[key])]
    return args


# -- code --------------------------------------------------------------------------------
def _writable_code_dir(code_dir: Path) -> Path:
    try:
        code_dir.mkdir(parents=True, exist_ok=True)
        if os.access(code_dir, os.W_OK):
            return code_dir
    except OSError:
        pass
    # /opt/ml is SageMaker's mount; if this user may not write there, any place will do.
    fallback = Path(tempfile.mkdtemp(prefix="code-"))
    _say(f"{code_dir} is not writable; the code goes to {fallback}")
    return fallback


def place_code(submit_directory: Any, layout: Layout) -> Path:
    """The directory holding the job's code, extracted from ``submit_directory``."""
    code_dir = layout.code_dir
    if submit_directory in (None, ""):
        return code_dir  # the code is already there (baked into an image)
    source = str(submit_directory)
    if source.startswith("s3://"):
        raise SetupError(
            f"{SUBMIT_DIRECTORY} is {source}: this image runs with network isolation and has "
            "no S3 client, so it cannot download code. Send the code as the 'code' input "
            "channel and set the hyperparameter to /opt/ml/input/data/code/sourcedir.tar.gz "
            "(what ml/clouds/aws/ does for this image)"
        )
    source = source.removeprefix("file://")
    if "://" in source:
        raise SetupError(f"{SUBMIT_DIRECTORY} {source!r}: only local paths are supported")
    path = layout.rebase(Path(source))
    if path.is_dir():
        target = _writable_code_dir(code_dir)
        if path.resolve() != target.resolve():
            shutil.copytree(path, target, dirs_exist_ok=True)
        return target
    if not path.is_file():
        raise SetupError(
            f"{SUBMIT_DIRECTORY} {path} does not exist (is the 'code' channel in the job's "
            "InputDataConfig?)"
        )
    target = _writable_code_dir(code_dir)
    try:
        with tarfile.open(path, "r:*") as archive:
            # "data": no absolute paths, no '..', no links out of the directory, no devices
            archive.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SetupError(f"{SUBMIT_DIRECTORY} {path}: cannot extract the code ({exc})") from None
    return target


# -- environment ---------------------------------------------------------------------------
def channels(layout: Layout) -> list[str]:
    names: set[str] = set()
    if layout.data_dir.is_dir():
        names |= {p.name for p in layout.data_dir.iterdir() if p.is_dir()}
    config = layout.config_dir / "inputdataconfig.json"
    if config.is_file():
        try:
            declared = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            declared = {}
        if isinstance(declared, dict):
            names |= {str(name) for name in declared}
    return sorted(names)


def environment(
    base: Mapping[str, str],
    layout: Layout,
    code_dir: Path,
    hyperparameters: Mapping[str, Any],
    names: list[str],
) -> dict[str, str]:
    """The program's environment: ``base`` plus the toolkit's variables where unset."""
    env = dict(base)
    user = {k: v for k, v in hyperparameters.items() if not k.startswith(RESERVED_PREFIX)}
    defaults = {
        "SM_MODEL_DIR": str(layout.model_dir),
        "SM_INPUT_DIR": str(layout.input_dir),
        "SM_INPUT_CONFIG_DIR": str(layout.config_dir),
        "SM_OUTPUT_DIR": str(layout.output_dir),
        "SM_OUTPUT_DATA_DIR": str(layout.output_data_dir),
        "SM_CHANNELS": json.dumps(names),
        "SM_HPS": json.dumps(user, sort_keys=True),
        "SM_USER_ARGS": json.dumps(program_arguments(hyperparameters)),
        "SM_USER_ENTRY_POINT": str(hyperparameters.get(PROGRAM, "")),
        "SM_MODULE_DIR": str(hyperparameters.get(SUBMIT_DIRECTORY) or code_dir),
        **{f"SM_CHANNEL_{name.upper()}": str(layout.data_dir / name) for name in names},
    }
    if hyperparameters.get(JOB_NAME):
        defaults["TRAINING_JOB_NAME"] = str(hyperparameters[JOB_NAME])
    for key, value in defaults.items():
        env.setdefault(key, value)
    existing = base.get("PYTHONPATH")
    env["PYTHONPATH"] = str(code_dir) + (os.pathsep + existing if existing else "")
    return env


def _writable(directory: Path, what: str) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SetupError(f"{what} {directory} cannot be created ({exc})") from None
    if not os.access(directory, os.W_OK):
        raise SetupError(f"{what} {directory} is not writable by uid {os.getuid()}")


@dataclass(frozen=True)
class Job:
    command: list[str]
    cwd: Path
    env: dict[str, str]
    program: str


def prepare(layout: Layout, base_env: Mapping[str, str]) -> Job:
    hyperparameters = read_hyperparameters(layout.config_dir)
    program = hyperparameters.get(PROGRAM)
    if not program or not isinstance(program, str):
        raise SetupError(f"hyperparameter {PROGRAM} is missing: which script should run?")
    code_dir = place_code(hyperparameters.get(SUBMIT_DIRECTORY), layout)
    script = (code_dir / program).resolve()
    if not script.is_relative_to(code_dir.resolve()) or not script.is_file():
        raise SetupError(f"{PROGRAM} {program!r} is not a file in the code ({code_dir})")
    _writable(layout.model_dir, "SM_MODEL_DIR")
    _writable(layout.output_data_dir, "SM_OUTPUT_DATA_DIR")
    env = environment(base_env, layout, code_dir, hyperparameters, channels(layout))
    command = [sys.executable, str(script), *program_arguments(hyperparameters)]
    return Job(command=command, cwd=code_dir, env=env, program=program)


# -- running -------------------------------------------------------------------------------
def _say(line: str) -> None:
    print(f"train: {line}", file=sys.stderr, flush=True)


def run(job: Job) -> tuple[int, list[str]]:
    """Run the program; stream its output; return its exit code and the end of its stderr."""
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    process = subprocess.Popen(
        job.command,
        cwd=job.cwd,
        env=job.env,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )

    def forward(signum: int, _frame: Any) -> None:
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert process.stderr is not None
        for line in process.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line.rstrip("\n"))
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code < 0:  # ended by a signal: report it the way a shell does
        code = 128 - code
    return code, list(tail)


def failure_reason(header: str, lines: list[str], limit: int = FAILURE_REASON_MAX) -> str:
    """``header`` then as many of the last ``lines`` as fit in ``limit`` characters (the end
    of a traceback, the exception itself, is what must survive)."""
    text = header[:limit]
    kept: list[str] = []
    size = len(text) + 1
    for line in reversed([ln for ln in lines if ln.strip()]):
        if size + len(line) + 1 > limit:
            if not kept and size < limit:  # one huge last line: keep its end
                kept.insert(0, line[-(limit - size) :])
            break
        kept.insert(0, line)
        size += len(line) + 1
    return "\n".join([text, *kept]) if kept else text


def write_failure(layout: Layout, reason: str) -> None:
    _say(reason.splitlines()[0])
    try:
        layout.failure_file.parent.mkdir(parents=True, exist_ok=True)
        layout.failure_file.write_text(reason, encoding="utf-8")
    except OSError as exc:
        _say(f"could not write {layout.failure_file} ({exc})")


def _stop_before_start(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["train"]):
        print(SYNTAX, file=sys.stderr)
        return EXIT_SETUP_ERROR
    signal.signal(signal.SIGTERM, _stop_before_start)
    layout = Layout.from_env(os.environ)
    try:
        job = prepare(layout, os.environ)
    except SetupError as exc:
        write_failure(layout, f"training setup failed: {exc}")
        return EXIT_SETUP_ERROR
    _say(f"running {' '.join([job.program, *job.command[2:]])} in {job.cwd}")
    code, tail = run(job)
    if code != 0:
        write_failure(layout, failure_reason(f"{job.program} exited with code {code}:", tail))
    return code


if __name__ == "__main__":
    sys.exit(main())
