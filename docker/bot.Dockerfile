# The bot image: `ivrbot serve` (SIP/RTP endpoint + Pipecat pipeline per call).
# Build from the repository root:  docker build -f docker/bot.Dockerfile -t ivrbot/bot:0.1.0 .
# Base images are pinned to exact versions (replace with @sha256 digests in a registry you mirror).
FROM python:3.12.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ivrbot
WORKDIR /src
COPY pyproject.toml README.md ./
# Only the bot's own root and its extra: no sidecar, operator or developer code or dependencies.
COPY bot ./bot
RUN /opt/ivrbot/bin/pip install ".[bot]"

FROM python:3.12.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/ivrbot/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp ivrbot
COPY --from=build /opt/ivrbot /opt/ivrbot
# Runs read-only as 10001 (the operator's pod securityContext); /tmp is an emptyDir there.
USER 10001
WORKDIR /tmp
# SIP, HTTP and RTP ports come from the operator (env IVRBOT_*); the pod uses hostNetwork.
ENTRYPOINT ["ivrbot"]
CMD ["serve"]
