#!/bin/sh
# deps.sh — installs what rpcsim needs on a fresh Debian machine (as root).
# A no-op when everything is present.
set -e
need=""
pkg-config --exists glib-2.0 2>/dev/null || need="$need libglib2.0-dev pkg-config"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
command -v gcovr >/dev/null 2>&1 || need="$need gcovr"
command -v valgrind >/dev/null 2>&1 || need="$need valgrind"
[ -f /usr/include/valgrind/valgrind.h ] || need="$need valgrind"
if [ -n "$need" ]; then
    echo "deps: installing$need"
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: not root; run: sudo apt-get install -y$need" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $need
fi
