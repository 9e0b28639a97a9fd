"""Errors Tandem raises on purpose. Each message says what was wrong and where."""


class TandemError(Exception):
    """Base of every error Tandem raises deliberately (the CLI prints these without a trace)."""


class SpecError(TandemError):
    """A model spec is malformed: the message names the file, the key and what was expected."""


class DataError(TandemError):
    """A dataset does not match its spec: missing columns, wrong types, empty, NaN target."""


class ConfigError(TandemError):
    """Stack outputs or settings are missing or malformed."""


class InvalidNameError(TandemError, ValueError):
    """A model or stack name breaks its naming rule (contract.naming); nothing was touched."""


class ArtifactIntegrityError(TandemError):
    """An artifact file is missing or its sha256 differs from MANIFEST.json."""


class NotFoundError(TandemError):
    """A model, version, artifact or deployment does not exist."""


class ConflictError(TandemError):
    """A write would overwrite different content under the same name."""


class InvalidTransitionError(TandemError):
    """A registry status change that the state machine does not allow."""


class GateFailedError(TandemError):
    """A candidate failed its evaluation gates; `verdict` holds every reason."""

    def __init__(self, verdict, result=None):
        self.verdict = verdict
        self.result = result  # the lifecycle's PipelineResult, with the rejected version
        super().__init__("gate failed: " + "; ".join(verdict.reasons))
