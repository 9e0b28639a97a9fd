"""What an endpoint is told through its environment, and the alias that marks what is live."""

from __future__ import annotations

ENV_MODEL_URI = "MODEL_URI"  # the verified artifact the endpoint loads
ENV_MODEL_NAME = "MODEL_NAME"
ENV_MODEL_VERSION = "MODEL_VERSION"
LIVE_ALIAS = "live"  # the Lambda alias that receives traffic (a canary adds a weighted version)
