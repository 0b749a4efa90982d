#!/usr/bin/env bash
# Installs the Label Studio server (1.23.2) in its own venv `.lsvenv` (it would downgrade pyarrow and pull
# Django into the project venv). Skipped when that exact version is already installed.
# Used by the Label Studio integration tests (tests/labelstudio) and for local use:
#   .lsvenv/bin/label-studio start --no-browser ...   (see docs/labelstudio.md)
set -euo pipefail
cd "$(dirname "$0")/.."

LS_VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
LS_VENV="${LABEL_STUDIO_VENV:-.lsvenv}"

installed_version() {
  # NOTE: `label-studio --version` starts a server; ask pip instead.
  "$LS_VENV/bin/python" -m pip show label-studio 2>/dev/null | sed -n 's/^Version: //p'
}

if [ -x "$LS_VENV/bin/label-studio" ] && [ "$(installed_version)" = "$LS_VERSION" ]; then
  echo "label-studio $LS_VERSION already installed in $LS_VENV"
  exit 0
fi

echo "installing label-studio $LS_VERSION into $LS_VENV (about a minute)"
if [ ! -x "$LS_VENV/bin/python" ]; then
  python3.11 -m venv "$LS_VENV" 2>/dev/null || python3 -m venv "$LS_VENV"
fi
"$LS_VENV/bin/python" -m pip install -q --upgrade pip
"$LS_VENV/bin/python" -m pip install -q "label-studio==$LS_VERSION"
echo "label-studio $(installed_version) installed in $LS_VENV"
