#!/usr/bin/env bash
# The appliance in the offline school lab (docs/lab.md), on Debian 12, as root:
#
#   bash scripts/lab.sh         install (scripts/install.sh), bring the lab up with the appliance and its
#                               sample policy (or find it up), print what each group can reach, and
#                               serve the web UI on https://127.0.0.1:8443
#   bash scripts/lab.sh down    stop the web UI and remove the lab
#
# Safe to run again: an existing healthy lab is kept, a broken or partial one is rebuilt.
# LAB_NAME=NAME runs a lab of another name (default lab) beside the first.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${LAB_NAME:-lab}"
action="${1:-up}"

if [ "$(id -u)" != 0 ]; then
  echo "lab.sh: run as root (it makes network namespaces): sudo bash scripts/lab.sh $action" >&2
  exit 1
fi
lab() { .venv/bin/appliance lab --name "$name" "$@"; }

case "$action" in
  down)
    if [ -x .venv/bin/appliance ]; then
      lab down
    else
      echo "lab.sh: not installed, so no lab to remove"
    fi
    exit 0
    ;;
  up) ;;
  *)
    echo "usage: bash scripts/lab.sh [up|down]" >&2
    exit 2
    ;;
esac

# The lab needs only what the appliance itself needs (unbound, nftables, dig, curl, ethtool, aioquic),
# so the plain install, without the test suite's packages.
bash scripts/install.sh

if status="$(lab status 2>/dev/null)" && grep -q "gateway runs the appliance" <<<"$status"; then
  echo "== lab '$name' is already up"
else
  # Whatever an earlier run left (a crash, a reboot, a lab without the appliance) goes first.
  lab down >/dev/null
  echo "== bringing lab '$name' up: namespaces, servers, the appliance and its sample policy"
  lab up --gateway appliance
fi

echo
echo "== what each group can reach (appliance lab --name $name check)"
lab check

echo
echo "== the web UI"
lab webui

again="bash scripts/lab.sh"
[ "$name" = lab ] || again="LAB_NAME=$name $again"
echo
echo "Try a client:   sudo ip netns exec $name-students curl http://www.bet365.com/"
echo "Status:         sudo .venv/bin/appliance lab --name $name status"
echo "Remove it all:  sudo $again down"
