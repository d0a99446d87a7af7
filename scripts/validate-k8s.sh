#!/usr/bin/env bash
# Validates everything the operator ships or renders against real Kubernetes schemas and Helm:
#   - every object the builders render (operator/tests/golden/*.yaml and `parsec-operator render`
#     of manifests/examples/*.yaml) with kubernetes-validate --strict for Kubernetes $K8S_VERSION;
#   - manifests/install.yaml, manifests/operator.yaml;
#   - the Helm chart: linted (strict) and rendered by Helm's Go SDK through helm-python-sdk, with
#     default values and with every option on, the output validated as above;
#   - the example ParsecClusters against the CRD's openAPIV3Schema (strict: unknown fields fail),
#     plus negative cases that must fail;
#   - cert-manager Certificates against models generated from cert-manager's CRDs
#     (cloudcoil-models-cert-manager, strict), plus negative cases that must fail.
# The CEL rules are exercised by `cargo test -p parsec-operator --test crd` (kube-cel).
#
# Usage: scripts/validate-k8s.sh            (needs python3 ≥ 3.10 with venv, and cargo)
# Env:   K8S_VERSION (default 1.37.0), PARSEC_K8S_VENV (default target/venv-k8s),
#        CARGO_TARGET_DIR (respected), PIP_INDEX_URL (respected).
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-1.37.0}"
VENV="${PARSEC_K8S_VENV:-${CARGO_TARGET_DIR:-target}/venv-k8s}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "kubernetes-validate==1.37.0" "helm-python-sdk==0.2.2" "jsonschema>=4.20" "pyyaml>=6" \
  "cloudcoil==0.6.0" "cloudcoil-models-cert-manager==1.17.1.0"

echo "== building parsec-operator"
cargo build --quiet --locked -p parsec-operator
BIN="${CARGO_TARGET_DIR:-target}/debug/parsec-operator"

exec "$VENV/bin/python" scripts/validate_k8s.py --operator "$BIN" --kubernetes-version "$K8S_VERSION"
