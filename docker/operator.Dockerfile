# The IVRBot operator: `ivrbot-operator` (kopf in-process, liveness on :8080/healthz).
# Build from the repository root:  docker build -f docker/operator.Dockerfile -t ivrbot/operator:0.1.0 .
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY operator ./operator
# The operator needs only kopf + kubernetes + aiohttp + pyyaml, but it ships in the one
# project distribution; installing without the speech extras keeps the image lean.
RUN pip install . && rm -rf /src

USER 10001
EXPOSE 8080
ENTRYPOINT ["ivrbot-operator"]
