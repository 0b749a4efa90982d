#!/usr/bin/env bash
# The fresh-machine check: reproduce a new user's machine as far as one can on the same box, then run the
# README's test command there.
#
#   scripts/fresh_check.sh [REF]        (default REF: HEAD; only committed work is checked)
#
# - a clean clone of REF in a new temp folder, with ../shared beside it (a link to this checkout's ../shared);
# - a fresh TMPDIR and fresh per-user caches of the tools the project drives (pip, DVC's site cache, XDG caches,
#   numba, Ray): nothing an earlier run left behind is visible;
# - CI=true, as in CI: a test whose prerequisite `make test` installs fails instead of skipping;
# - then `make test` (it creates .venv and .lsvenv inside the clone, installs Chromium if absent, runs ruff,
#   mypy and pytest) and prints how long it took.
#
# What it cannot undo on a shared box: system packages already installed (Chromium), pip's machine-wide
# configuration (/etc/xdg/pip, ~/.config/pip: the local wheel store for torch). The clone is deleted after a
# pass (set KEEP=1 to keep it) and kept after a failure for inspection; the log is written beside it.
set -euo pipefail

src=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
ref=${1:-HEAD}
commit=$(git -C "$src" rev-parse --verify "$ref^{commit}")
shared=$(cd "$src/.." && pwd)/shared
[ -d "$shared/data" ] || { echo "fresh_check: $shared/data not found (the evaluation data must lie beside the checkout)" >&2; exit 2; }

root=$(mktemp -d "${FRESH_CHECK_DIR:-/tmp}/mlfresh.XXXXXX")  # short: Unix socket paths live under it
log="$root/fresh_check.log"
git clone -q --no-hardlinks "$src" "$root/maskloop"
git -C "$root/maskloop" checkout -q --detach "$commit"
ln -s "$shared" "$root/shared"
mkdir -p "$root/tmp" "$root/cache" "$root/dvc-site"

echo "fresh_check: $commit in $root (log: $log)"
start=$(date +%s)
set +e
(
  cd "$root/maskloop"
  unset NUMBA_CACHE_DIR RAY_TMPDIR RAY_ADDRESS DVC_SITE_CACHE_DIR VIRTUAL_ENV PYTHONPATH MASKLOOP_TEST_STATE
  export TMPDIR="$root/tmp" XDG_CACHE_HOME="$root/cache" PIP_CACHE_DIR="$root/cache/pip" \
         DVC_SITE_CACHE_DIR="$root/dvc-site" CI=true
  make test </dev/null
) >"$log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
tail -n 25 "$log"
printf 'fresh_check: make test exited %d after %dm%02ds (commit %s)\n' "$rc" $((elapsed / 60)) $((elapsed % 60)) "${commit:0:12}"
if [ "$rc" -eq 0 ] && [ -z "${KEEP:-}" ]; then
  rm -rf "$root/maskloop" "$root/tmp" "$root/cache" "$root/dvc-site"
  echo "fresh_check: clone removed; log kept at $log"
fi
exit "$rc"
