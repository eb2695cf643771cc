#!/bin/sh
# Runs the dashboard's browser end-to-end test (TestBrowser) on a fresh
# Debian machine: installs Debian's chromium and node when missing, the
# pinned playwright-core (never a browser download), then runs the test.
# It refreshes the screenshots under docs/screenshots, or writes them to
# $DFSMR_SCREENSHOTS when set.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
# Install only what is missing: a machine may have its node from another
# package than Debian's, which Debian's npm would conflict with.
missing=""
command -v chromium >/dev/null 2>&1 || missing="chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update
	# shellcheck disable=SC2086 # a list of package names
	$sudo apt-get install -y $missing
fi
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi
cd "$root"
DFSMR_CHROMIUM=${DFSMR_CHROMIUM:-$(command -v chromium)} \
	go test -tags browser -count=1 -run '^TestBrowser$' -v ./server/web/
