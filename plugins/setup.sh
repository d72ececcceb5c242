#!/usr/bin/env bash
# Installs the toolchains that build the Python and JavaScript plugins, pinned:
# componentize-py (requirements.txt) in plugins/.venv and componentize-js (package-lock.json)
# in plugins/node_modules. `tollgate build-plugins` and the test build find them there.
# Quick when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")"
want_py=$(sed -n 's/^componentize-py==\([^ ]*\).*/\1/p' requirements.txt)
if [ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py $want_py" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
# The lock's packages need Node 20.19 or later (Debian 12 and Ubuntu 24.04 ship 18).
node_major_minor=$(node -p 'process.versions.node.split(".").slice(0, 2).join(".")')
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
    echo "plugins/setup.sh: Node $node_major_minor is too old for componentize-js; install Node 20.19 or later (e.g. from nodejs.org or NodeSource)" >&2
    exit 1
fi
want_js=$(node -p 'require("./package.json").devDependencies["@bytecodealliance/componentize-js"]')
have_js=$(node -p 'try { require("./node_modules/@bytecodealliance/componentize-js/package.json").version } catch { "" }')
if [ "$have_js" != "$want_js" ]; then
    npm ci --no-audit --no-fund --silent
fi
