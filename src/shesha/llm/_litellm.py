"""The one place that imports LiteLLM, after making sure it never fetches its cost map
from the network at import (LITELLM_LOCAL_MODEL_COST_MAP=True)."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm

litellm.suppress_debug_info = True
litellm.telemetry = False

__all__ = ["litellm"]
