# The bot image: `ivrbot serve` (SIP/RTP endpoint + Pipecat pipeline per call).
# Build from the repository root:  docker build -f docker/bot.Dockerfile -t ivrbot/bot:0.1.0 .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY operator ./operator
RUN pip install . && rm -rf /src

RUN useradd --uid 10001 --create-home ivrbot
USER 10001
WORKDIR /home/ivrbot
# SIP, HTTP and RTP ports come from the operator (env IVRBOT_*); the pod uses hostNetwork.
ENTRYPOINT ["ivrbot"]
CMD ["serve"]
