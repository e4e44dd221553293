#!/bin/sh
# What tests/map.rs needs: Debian's chromium, run headless against the
# map's pages. Installing needs root (CI runs as root); without it the
# script says what to install and fails, and the tests are ignored unless
# REQUIRE_KVM=1.
set -eu

. "$(dirname "$0")/../as_root.sh"

if command -v chromium >/dev/null; then
    exit 0
fi
if ! apt-cache show chromium >/dev/null 2>&1; then
    # A mirror mid-sync can fail one index; the ones needed may be fine.
    as_root apt-get update -q || true
fi
as_root apt-get install -y -q --no-install-recommends chromium
