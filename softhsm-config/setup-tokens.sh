#!/bin/sh
# Usage: setup-tokens.sh DIR LABEL [LABEL...]
# Creates DIR/tokens and DIR/softhsm2.conf, then initialises each token by label.
# PINs come from TOKENKEYS_SO_PIN / TOKENKEYS_PIN (never argv); dev/CI defaults
# are used only when unset. Idempotent: an existing label is left alone.
# Prints `export SOFTHSM2_CONF=...` on stdout; everything else goes to stderr.
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 DIR LABEL [LABEL...]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
dir=$1
shift
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
if [ ! -f "$conf" ]; then
    sed "s|@TOKENDIR@|$dir/tokens|" "$here/softhsm2.conf.in" > "$conf"
fi
if [ -z "${TOKENKEYS_SO_PIN:-}" ]; then
    echo "warning: TOKENKEYS_SO_PIN unset, using the throwaway dev/CI default (docs/ci.md)" >&2
    TOKENKEYS_SO_PIN=12345678
fi
if [ -z "${TOKENKEYS_PIN:-}" ]; then
    echo "warning: TOKENKEYS_PIN unset, using the throwaway dev/CI default (docs/ci.md)" >&2
    TOKENKEYS_PIN=123456
fi
export TOKENKEYS_SO_PIN TOKENKEYS_PIN
SOFTHSM2_CONF=$conf
export SOFTHSM2_CONF
module=${SOFTHSM2_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
for label in "$@"; do
    # Import from the source tree when run from a checkout without install.
    PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" \
        "${PYTHON:-python3}" -m tokenkeys.drivers.p11.admin --if-missing "$module" "$label" >&2
done
echo "export SOFTHSM2_CONF=$conf"
