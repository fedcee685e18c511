#!/usr/bin/env bash
# Build (once) the Debian sid chroot holding Asterisk 22 for the real-Asterisk tests.
# The script itself ships in the package (bridge/sandbox/build.sh, also used by `bridge demo`);
# this wrapper keeps the path CI and the README use.
# Usage: tests/asterisk/build-sandbox.sh [DIR]    (root required; ~60 s, ~640 MB)
set -euo pipefail
exec bash "$(dirname "$0")/../../bridge/sandbox/build.sh" "$@"
