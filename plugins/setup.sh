#!/usr/bin/env bash
# Installs the toolchains that build the Python and JavaScript plugins, pinned:
# componentize-py (requirements.txt) in plugins/.venv and componentize-js (package-lock.json)
# in plugins/node_modules. `tollgate build-plugins` and the test build find them there.
# Quick when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")"
want_py=$(sed -n 's/^componentize-py==//p' requirements.txt)
if [ "$(.venv/bin/componentize-py --version 2>/dev/null)" != "componentize-py $want_py" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
want_js=$(node -p 'require("./package.json").devDependencies["@bytecodealliance/componentize-js"]')
have_js=$(node -p 'try { require("./node_modules/@bytecodealliance/componentize-js/package.json").version } catch { "" }')
if [ "$have_js" != "$want_js" ]; then
    npm ci --no-audit --no-fund --silent
fi
