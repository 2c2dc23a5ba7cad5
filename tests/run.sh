#!/usr/bin/env bash
# Runs the test suite. Where we may create a network namespace (root in CI), the tests run in
# one that has only `lo`, so every byte of Ray and MLflow traffic stays on loopback (Ray would
# otherwise advertise the host's routable address). Elsewhere they run as they are.
set -euo pipefail
export MLFLOW_DISABLE_TELEMETRY=true  # no telemetry calls from the tests (there is no network)
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/python -m pytest "$@")
if [ "${AITEXVAE_NO_NETNS:-0}" != 1 ] && unshare -n true 2>/dev/null; then
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' _ "${PYTEST[@]}"
fi
exec "${PYTEST[@]}"
