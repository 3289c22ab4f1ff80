#!/usr/bin/env bash
# Installs everything the appliance (and, with --dev, its test suite) needs on Debian 12, as root.
# Idempotent: safe to run again. The venv uses Debian's python3 so that python3-nftables is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
[ "${1:-}" = "--dev" ] && dev=1

export DEBIAN_FRONTEND=noninteractive
runtime_pkgs=(python3 python3-venv python3-dev python3-nftables build-essential libssl-dev
  nftables iptables iproute2 conntrack unbound dnsutils curl openssl ca-certificates ethtool
  weasyprint python3-numpy dns-root-data)
dev_pkgs=(tshark tcpdump gnutls-bin chromium chromium-driver firefox-esr dnsperf dnsmasq
  libnetfilter-queue-dev tcpreplay systemd valgrind poppler-utils)
pkgs=("${runtime_pkgs[@]}")
[ "$dev" = 1 ] && pkgs+=("${dev_pkgs[@]}")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's unbound starts itself on install; the appliance runs its own instance.
systemctl disable --now unbound >/dev/null 2>&1 || true

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
# pip and the Cython build are chatty; their output is kept in a log and shown only if they fail.
log=$(mktemp /tmp/appliance-install.XXXXXX.log)
target=.
[ "$dev" = 1 ] && target='.[dev]'
echo "installing the project into .venv (compiling the fast path; log: $log)"
if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e "$target"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install.sh: pip install failed (log above, also in $log)" >&2
  exit 1
fi
# The systemd units (systemd/) run the appliance from here.
ln -sf "$PWD/.venv/bin/appliance" /usr/local/bin/appliance
echo "installed: $(appliance --version)"
