#!/bin/sh
# Runs the dashboard's browser end-to-end test (TestBrowser) on a fresh
# Debian machine: installs Debian's chromium and node when missing, the
# pinned playwright-core (never a browser download), then runs the test.
# It refreshes the screenshots under docs/screenshots, or writes them to
# $DFSMR_SCREENSHOTS when set.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
if ! command -v chromium >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update
	$sudo apt-get install -y chromium nodejs npm
fi
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
cd "$root"
DFSMR_CHROMIUM=${DFSMR_CHROMIUM:-$(command -v chromium)} \
	go test -tags browser -count=1 -run '^TestBrowser$' -v ./server/web/
