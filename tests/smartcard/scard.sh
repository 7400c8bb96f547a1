#!/bin/bash
# Emulated OpenPGP smartcard for tests: pcscd + vpcd (vsmartcard-vpcd) + a
# pure-Python OpenPGP card (PyPI smartcard-app-openpgp) bridged to vpcd.
# The emulated OpenPGP card behind pcscd (docs/smartcard.md).
#   scard.sh setup   # once: .venv-emu with the card emulator (apt packages if root and missing)
#   scard.sh up      # start pcscd and insert a FRESH card (state/card.fs wiped)
#   scard.sh insert | remove   # card only (pcscd keeps running); keys and PIN
#                              # counters survive in state/card.fs, as on a real card
#   scard.sh down    # remove card, stop pcscd (only the PIDs we started)
# Exit 3 from `up`: a pcscd this script did not start is running (one per machine:
# vpcd listens on fixed ports 35963/35964).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ST=${SCARD_STATE:-$HERE/state}
VENV=${SCARD_VENV:-$HERE/../../.venv-emu}
mkdir -p "$ST"

wait_for() { # wait_for SECONDS CMD...
  local end=$(( $(date +%s%N) + $1 * 1000000000 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s%N)" -lt "$end" ] || return 1; sleep 0.05; done
}
vpcd_listening() { ss -Hltn 'sport = :35963' | grep -q .; }
card_present()   { opensc-tool -l 2>/dev/null | grep -Eq '^0 +Yes'; }
card_absent()    { ! card_present; }
stop_pid() { # stop_pid FILE NAME: only if that PID still runs NAME (no PID reuse accidents)
  [ -f "$1" ] || return 0; local p; p=$(cat "$1"); rm -f "$1"
  ps -p "$p" -o args= 2>/dev/null | grep -q -- "$2" || return 0
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$p" 2>/dev/null || true
}

case "${1:-}" in
setup)
  missing=()
  for p in pcscd vsmartcard-vpcd opensc iproute2; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=300 install -y -q "${missing[@]}"; fi
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'smartcard-app-openpgp==0.4.0' ;;
up)
  "$0" down
  if pgrep -x pcscd >/dev/null || vpcd_listening; then
    echo "a pcscd not started by $0 is running (pid $(pgrep -x pcscd | tr '\n' ' '))" >&2
    exit 3
  fi
  rm -f "$ST"/card.fs "$ST"/card.fs.*
  pcscd -f > "$ST/pcscd.log" 2>&1 & echo $! > "$ST/pcscd.pid"
  wait_for 10 vpcd_listening || { echo "vpcd not listening" >&2; exit 1; }
  "$0" insert ;;
insert)
  "$VENV/bin/python" "$HERE/pgpcard_vpcd.py" --storage "$ST/card.fs" > "$ST/card.log" 2>&1 &
  echo $! > "$ST/card.pid"
  wait_for 15 card_present || { echo "card not detected" >&2; cat "$ST/card.log" >&2; exit 1; } ;;
remove)
  stop_pid "$ST/card.pid" pgpcard_vpcd; wait_for 5 card_absent || true ;;
down)
  stop_pid "$ST/card.pid" pgpcard_vpcd; stop_pid "$ST/pcscd.pid" pcscd ;;
*) echo "usage: $0 setup|up|insert|remove|down" >&2; exit 2 ;;
esac
