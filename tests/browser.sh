#!/usr/bin/env bash
# tests/browser.sh — the real browser for the landing page's tests.
#
# Installs Debian's Chromium and its WebDriver (chromedriver), without
# recommended packages (so no udev, CUPS or other services come along), and
# the fonts the screenshots need: Liberation for Latin text, Noto CJK so
# the Korean page shows Hangul instead of boxes. The tests start
# chromedriver themselves, headless, on a loopback port.
#
#   tests/browser.sh install   apt-get install (a quick no-op when present)
#   tests/browser.sh status    say what is there; non-zero if anything is missing
#
# Paths the tests use: /usr/bin/chromium, /usr/bin/chromedriver (override
# with LIAISON_CHROMIUM, LIAISON_CHROMEDRIVER).
set -euo pipefail

PACKAGES=(chromium chromium-driver fonts-liberation fonts-noto-cjk)
CHROMIUM=${LIAISON_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${LIAISON_CHROMEDRIVER:-/usr/bin/chromedriver}

present() {
    [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ] || return 1
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
    done
}

case "${1:-}" in
install)
    if present; then
        echo "browser: chromium and chromedriver already installed"
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    present || { echo "browser: install did not provide $CHROMIUM and $CHROMEDRIVER" >&2; exit 1; }
    echo "browser: installed $("$CHROMIUM" --version 2>/dev/null | head -1)"
    ;;
status)
    if present; then
        "$CHROMIUM" --version 2>/dev/null | head -1
        "$CHROMEDRIVER" --version 2>/dev/null | head -1
    else
        echo "browser: missing (run: bash tests/browser.sh install)" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 install|status" >&2
    exit 2
    ;;
esac
