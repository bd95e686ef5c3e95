# The IVRBot operator: `ivrbot-operator` (kopf in-process, liveness on :8080/healthz).
# Build from the repository root:  docker build -f docker/operator.Dockerfile -t ivrbot/operator:0.1.0 .
# Without the speech stack: only the operator's root and its extra (kopf, kubernetes, aiohttp, pyyaml).
FROM python:3.12.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/operator
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/operator/bin/pip install ".[operator]" \
 && /opt/operator/bin/python -c "import ivrbot_operator.main"

FROM python:3.12.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/operator/bin:$PATH
COPY --from=build /opt/operator /opt/operator
USER 10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["ivrbot-operator"]
