#!/usr/bin/env bash
# Makes sure `wrk` (the benchmark's load generator, bench/wrk.py) can run, on a machine that may
# have no network (bench/gpu.sh calls it). Prints the folder to put first on PATH ("" when wrk
# is already on PATH), or fails with what to do.
#
# In order: wrk on PATH; `apt-get install wrk` (as root, from the apt lists the machine has);
# Debian's packages in ./.deb/ (wrk, libluajit-5.1-2, libluajit-5.1-common: `make wrk-debs`
# downloads them on a machine with network), unpacked into ./.wrk/ with a wrapper that sets
# LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v wrk >/dev/null 2>&1; then echo ""; exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if DEBIAN_FRONTEND=noninteractive timeout 120 apt-get install -y -q wrk >/dev/null 2>&1 \
        && command -v wrk >/dev/null 2>&1; then echo ""; exit 0; fi
fi
if ls .deb/wrk_*.deb >/dev/null 2>&1; then
    rm -rf .wrk && mkdir -p .wrk/root .wrk/bin
    for deb in .deb/wrk_*.deb .deb/libluajit-5.1-*.deb; do
        [ -f "$deb" ] || continue
        if command -v dpkg-deb >/dev/null 2>&1; then
            dpkg-deb -x "$deb" .wrk/root
        else  # a .deb is an ar archive holding data.tar.*
            (tmp=$(mktemp -d) && cd "$tmp" && ar x "$OLDPWD/$deb" && tar -xf data.tar.* -C "$OLDPWD/.wrk/root" \
                && rm -rf "$tmp")
        fi
    done
    libs=$(dirname "$(find "$PWD/.wrk/root" -name 'libluajit-5.1.so.2*' | head -n 1)")
    cat > .wrk/bin/wrk <<WRAPPER
#!/bin/sh
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$PWD/.wrk/root/usr/bin/wrk" "\$@"
WRAPPER
    chmod +x .wrk/bin/wrk
    version=$(.wrk/bin/wrk --version 2>&1 || true)  # prints its version and usage, exits 1
    case "$version" in
        wrk\ *) echo "$PWD/.wrk/bin"; exit 0 ;;
    esac
    echo "wrk-local.sh: the wrk unpacked from .deb/ does not run here: $version" >&2
    exit 1
fi
echo "wrk-local.sh: wrk is not installed and cannot be: put Debian's wrk packages in .deb/ (make wrk-debs," \
     "on a machine with network), or run the matrix with --loadgen python" >&2
exit 1
