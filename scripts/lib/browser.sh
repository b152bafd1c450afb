# Sourced by scripts: what the console's browser test (tests/it/console.rs, which runs
# tests/console/console.mjs with Node) needs:
#   UPKEEP_TEST_CHROMIUM    Debian's chromium, headless                      apt chromium
#   UPKEEP_TEST_PLAYWRIGHT  the folder whose node_modules has playwright-core  npm playwright-core
# playwright-core drives the system chromium and downloads no browser of its own. A stamp file
# records the pin: a rerun with the same pin and everything in place does nothing.

UPKEEP_PIN_PLAYWRIGHT="playwright-core@1.65.1"

ensure_browser() {
  local root tools dir stamp
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  tools="$root/.tools"
  dir="$tools/browser"
  stamp="$tools/browser.stamp"
  mkdir -p "$tools"
  exec {_browser_lock}>"$tools/browser.lock"
  flock "$_browser_lock"
  if ! command -v chromium >/dev/null; then
    echo "scripts: installing chromium from Debian's packages" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
      flock -u "$_browser_lock"; exec {_browser_lock}>&-
      echo "scripts: installing chromium failed" >&2
      return 1
    fi
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "scripts: installing Node.js from Debian's packages" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }; then
      flock -u "$_browser_lock"; exec {_browser_lock}>&-
      echo "scripts: installing Node.js failed" >&2
      return 1
    fi
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$UPKEEP_PIN_PLAYWRIGHT" ] \
    || [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
    rm -f "$stamp"
    mkdir -p "$dir"
    echo "scripts: installing $UPKEEP_PIN_PLAYWRIGHT into .tools/browser" >&2
    if ! PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
      --save-exact "$UPKEEP_PIN_PLAYWRIGHT" >/dev/null; then
      flock -u "$_browser_lock"; exec {_browser_lock}>&-
      echo "scripts: installing $UPKEEP_PIN_PLAYWRIGHT failed" >&2
      return 1
    fi
    echo "$UPKEEP_PIN_PLAYWRIGHT" >"$stamp"
  fi
  flock -u "$_browser_lock"
  exec {_browser_lock}>&-
  export UPKEEP_TEST_CHROMIUM
  UPKEEP_TEST_CHROMIUM="$(command -v chromium)"
  export UPKEEP_TEST_PLAYWRIGHT="$dir"
  echo "test browser: $("$UPKEEP_TEST_CHROMIUM" --version 2>/dev/null | head -1) at ${UPKEEP_TEST_CHROMIUM}, ${UPKEEP_PIN_PLAYWRIGHT}" >&2
}
