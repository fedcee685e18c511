#!/usr/bin/env bash
# Build (once) a Debian sid chroot holding Asterisk 22, for `bridge demo` and the real-Asterisk
# tests (tests/asterisk/build-sandbox.sh calls this script).
#
# Debian 12 has no asterisk package; sid has 22.x. The chroot is kept outside the
# checkout (default /var/cache/slack-asterisk-bridge/sid) so every clone reuses it.
# Usage: build.sh [DIR]    (root required; ~60 s, ~640 MB)
set -euo pipefail

dir="${1:-${ASTERISK_SANDBOX:-/var/cache/slack-asterisk-bridge/sid}}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ -x "$dir/usr/sbin/asterisk" ]; then
    echo "sandbox: Asterisk already present in $dir"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "sandbox: building the Asterisk chroot needs root (debootstrap, chroot)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    echo "sandbox: installing debootstrap"
    apt-get update -qq && apt-get install -y -qq debootstrap
fi

start=$(date +%s)
partial="$dir.partial"
rm -rf "$partial"
mkdir -p "$(dirname "$dir")"
echo "sandbox: debootstrap sid into $partial"
debootstrap --variant=minbase sid "$partial" "$mirror" >"$partial.log" 2>&1 || {
    tail -20 "$partial.log" >&2; exit 1; }
# The mirror's sid Release file can be past its Valid-Until date; apt refuses it otherwise.
chroot "$partial" apt-get -o Acquire::Check-Valid-Until=false -qq update
DEBIAN_FRONTEND=noninteractive chroot "$partial" apt-get -o Acquire::Check-Valid-Until=false \
    install -y -qq --no-install-recommends asterisk asterisk-modules >>"$partial.log" 2>&1 || {
    tail -20 "$partial.log" >&2; exit 1; }
chroot "$partial" apt-get clean
rm -f "$partial.log"
mv "$partial" "$dir"
echo "sandbox: Asterisk $(chroot "$dir" /usr/sbin/asterisk -V) ready in $dir after $(( $(date +%s) - start )) s"
