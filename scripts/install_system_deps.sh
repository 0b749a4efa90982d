#!/usr/bin/env bash
# Installs what the tests need beyond the project venv; each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (browser tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if [ -x scripts/install_labelstudio.sh ]; then
  bash scripts/install_labelstudio.sh
fi
