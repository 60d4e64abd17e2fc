#!/bin/sh
# Installs the native build dependencies of aiopquic from Debian packages (needs root).
#
# Debian 12 (bookworm): ngtcp2 1.11 comes from bookworm-backports. The backports source is
# derived from the machine's own main stanza in debian.sources (only its Suites line changes),
# so no archive host name is written anywhere.  Debian 13+: everything is in main.
#
# Idempotent; returns at once when pkg-config already sees the pinned versions.
# Usage: vendor/install-native-deps.sh [--peers]
#   --peers also installs the test peers: gtlsclient/gtlsserver (ngtcp2's examples) and
#   Chromium (WebTransport browser tests, driven by Playwright with /usr/bin/chromium).
set -eu
. "$(dirname "$0")/versions.env"
export DEBIAN_FRONTEND=noninteractive
PKGS="libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev pkg-config"
WANT_PEERS=0
[ "${1:-}" = "--peers" ] && WANT_PEERS=1 && PKGS="$PKGS ngtcp2-client ngtcp2-server"
BROWSER_PKGS="chromium fonts-liberation"  # a font for the headless browser

have_all() {
  command -v pkg-config >/dev/null 2>&1 || return 1
  pkg-config --atleast-version="$NGTCP2_MIN" libngtcp2 libngtcp2_crypto_gnutls 2>/dev/null || return 1
  pkg-config --exists gnutls 2>/dev/null || return 1
  if [ "$WANT_PEERS" = 1 ]; then
    command -v gtlsclient >/dev/null 2>&1 || [ -x /usr/bin/gtlsclient ] || return 1
    [ -x /usr/sbin/gtlsserver ] || command -v gtlsserver >/dev/null 2>&1 || return 1
    [ -x /usr/bin/chromium ] || return 1
  fi
  return 0
}
have_all && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "install-native-deps: missing packages and not root; run as root: $PKGS" >&2
  exit 1
fi

. /etc/os-release
case "${VERSION_CODENAME:-}" in
  bookworm)
    SRC=/etc/apt/sources.list.d/debian.sources
    DST=/etc/apt/sources.list.d/aiopquic-backports.sources
    if [ ! -f "$SRC" ] && [ -f /etc/apt/sources.list ]; then
      # one-line format: copy the main archive's line, change only its suite
      LIST=/etc/apt/sources.list.d/aiopquic-backports.list
      awk -v rel="$VERSION_CODENAME" '$1 == "deb" {
          for (i = 2; i <= NF; i++) if ($i == rel) { $i = rel "-backports"; print; exit } }' \
        /etc/apt/sources.list > "$LIST.tmp"
      grep -q -- "-backports" "$LIST.tmp" || {
        echo "install-native-deps: no '$VERSION_CODENAME' line in /etc/apt/sources.list" >&2
        rm -f "$LIST.tmp"; exit 1; }
      mv "$LIST.tmp" "$LIST"
      apt-get update -q
      apt-get install -y -q --no-install-recommends -t "${VERSION_CODENAME}-backports" $PKGS
      SRC=""
    fi
    if [ -n "$SRC" ]; then
    # Keep the stanza whose Suites line is exactly the release (the main archive), rename its suite.
    awk -v rel="$VERSION_CODENAME" '
      BEGIN { RS = ""; ORS = "\n\n" }
      $0 ~ ("(^|\n)Suites:[ \t]*" rel "([ \t]|\n|$)") {
        n = split($0, lines, "\n"); out = ""
        for (i = 1; i <= n; i++) {
          if (lines[i] ~ /^Suites:/) lines[i] = "Suites: " rel "-backports"
          out = out lines[i] "\n"
        }
        printf "%s\n", out; exit
      }' "$SRC" > "$DST.tmp"
    grep -q "^Suites: ${VERSION_CODENAME}-backports\$" "$DST.tmp" || {
      echo "install-native-deps: no main stanza found in $SRC" >&2; rm -f "$DST.tmp"; exit 1; }
    mv "$DST.tmp" "$DST"
    apt-get update -q
    apt-get install -y -q --no-install-recommends -t "${VERSION_CODENAME}-backports" $PKGS
    fi ;;
  *)
    apt-get update -q
    apt-get install -y -q --no-install-recommends $PKGS ;;
esac
if [ "$WANT_PEERS" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  apt-get install -y -q --no-install-recommends $BROWSER_PKGS
fi
have_all || { echo "install-native-deps: packages installed but versions are still too old" >&2; exit 1; }
