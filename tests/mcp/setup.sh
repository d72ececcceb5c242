#!/usr/bin/env bash
# Installs the outside MCP clients that tests/it/mcp.rs drives, pinned: the Python SDK
# (requirements.txt) in tests/mcp/.venv and the Node SDK (package-lock.json) in
# tests/mcp/node_modules. Quick when they are already there.
set -euo pipefail
cd "$(dirname "$0")"
if ! .venv/bin/python -c 'import mcp' 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
if ! [ -f node_modules/@modelcontextprotocol/sdk/package.json ]; then
    npm ci --no-audit --no-fund --silent
fi
