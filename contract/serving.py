"""The serving vocabulary: what an endpoint is told, what it answers to, and how much it accepts.

Every entry point (the Lambda handler, the local/container server, the Azure function) and
every client (the lifecycle's smoke request, `tandem predict`, the benchmarks) reads these
words from here.
"""

from __future__ import annotations

# What an endpoint is told through its environment.
ENV_MODEL_URI = "MODEL_URI"  # the verified artifact the endpoint loads (path, s3://, https://)
ENV_MODEL_NAME = "MODEL_NAME"
ENV_MODEL_VERSION = "MODEL_VERSION"
# A canary for targets without a native weighted alias (local server, container, Flex
# Consumption): the second artifact and the share of requests it answers (0 < w < 1).
ENV_CANARY_URI = "CANARY_MODEL_URI"
ENV_CANARY_VERSION = "CANARY_MODEL_VERSION"
ENV_CANARY_WEIGHT = "CANARY_WEIGHT"
ENV_MAX_ROWS = "TANDEM_MAX_ROWS"
ENV_MAX_BODY_BYTES = "TANDEM_MAX_BODY_BYTES"
ENV_CAPTURE_SAMPLE = "TANDEM_CAPTURE_SAMPLE"  # share of requests captured, 0..1
# where captures go: a store root path, s3://bucket[/prefix] or a blob container URL
ENV_CAPTURE_URI = "TANDEM_CAPTURE_URI"

LIVE_ALIAS = "live"  # the Lambda alias that receives traffic (a canary adds a weighted version)

# The local endpoint's state per model: `<stack>/endpoint/<model>/serving.json`, written
# atomically by the local EndpointTarget on every deploy/rollback and watched by the server:
# {"model": str, "live": {"version": int, "path": str},
#  "canary": {"version": int, "path": str, "weight": float} | null}
STATE_FILE = "serving.json"
# Beside it while a `tandem serve` runs for the model: {"url": str, "pid": int}.
SERVER_FILE = "server.json"

# Routes every HTTP entry point answers (the container adds its platforms' own, below).
HEALTH_PATH = "/health"
PREDICT_PATH = "/predict"
# SageMaker real-time hosting: `docker run IMAGE serve`, port 8080, model in /opt/ml/model.
SAGEMAKER_PING_PATH = "/ping"
SAGEMAKER_INVOCATIONS_PATH = "/invocations"
SAGEMAKER_PORT = 8080
SAGEMAKER_MODEL_DIR = "/opt/ml/model"

# Request and response headers.
REQUEST_ID_HEADER = "x-request-id"  # honoured when well-formed, else one is generated
ROUTE_HEADER = "x-tandem-route"  # "live" or "canary": pins a request (smoke tests use it)
VERSION_HEADER = "x-tandem-version"  # the model version that answered

# How a 503 begins when the endpoint's model failed to load (a broken version), as opposed
# to one not loaded yet: a deploy's smoke request gives up on it at once instead of waiting.
LOAD_FAILED = "the model could not be loaded"

# Limits (overridable per endpoint through ENV_MAX_ROWS / ENV_MAX_BODY_BYTES).
MAX_ROWS = 1000
MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit
MAX_ECHO_CHARS = 60  # an error message never quotes more of a value than this

# A categorical value outside the categories a model was trained on (when the card's list of
# them is complete): the spec's `unseen_categories` picks the rule, the card's input schema
# records it under UNSEEN_KEY (a card without it means UNSEEN_ERROR).
UNSEEN_ERROR = "error"  # refuse the request: 422 naming the field
UNSEEN_MISSING = "missing"  # score the value as a missing one and say so in the answer
UNSEEN_RULES = (UNSEEN_ERROR, UNSEEN_MISSING)
UNSEEN_KEY = "unseen"  # the schema's rule, and the answer's note of what was scored as missing
MAX_UNSEEN_NOTES = 5  # the note lists at most this many values (and counts them all)

# The serving container (`python -m deploy.container serve`, deploy/Dockerfile): one image for
# SageMaker real-time endpoints (above), Azure ML online endpoints and Kubernetes. Azure ML's
# custom-container contract names the liveness, readiness and scoring routes (port and path)
# in the environment's inference_config and mounts the registered model under
# $AZUREML_MODEL_DIR, its folder one level down:
# https://learn.microsoft.com/en-us/azure/machine-learning/how-to-deploy-custom-container
# The deployment's environment_variables tell the container the same port and paths.
ENV_PORT = "TANDEM_PORT"  # default SAGEMAKER_PORT
ENV_HOST = "TANDEM_HOST"  # default 0.0.0.0 in the container
ENV_LIVENESS_PATH = "TANDEM_LIVENESS_PATH"  # answered 200 while the process runs
ENV_READINESS_PATH = "TANDEM_READINESS_PATH"  # answered like HEALTH_PATH (503 until loaded)
ENV_SCORING_PATH = "TANDEM_SCORING_PATH"  # answered like PREDICT_PATH
ENV_WORKERS = "TANDEM_WORKERS"
ENV_AZUREML_MODEL_DIR = "AZUREML_MODEL_DIR"  # set by Azure ML
ENV_SAGEMAKER_PORT = "SAGEMAKER_BIND_TO_PORT"  # set by SageMaker in inference pipelines
LIVENESS_PATH = "/live"
CONTAINER_HOST = "0.0.0.0"
