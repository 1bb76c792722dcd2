#!/usr/bin/env bash
# depthslam developer entry point; each command does its own set-up on a fresh clone.
#   ./dev.sh demo [ARGS]   run the main job on the built-in synthetic scene (no camera, no downloads)
#   ./dev.sh test [ARGS]   run the whole test suite (pytest ARGS)
#   ./dev.sh setup         only create/refresh .venv
# Environment: PYTHON (interpreter, default python3.11 or python3), DEPTHSLAM_TORCH (pip spec for torch,
# default torch==2.13.0: the CPU build on the project's machines; an unpinned torch pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
TORCH_SPEC=${DEPTHSLAM_TORCH:-torch==2.13.0}

need_libusb() {
    # open3d (0.20) needs the system library libusb-1.0 to import
    ! ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so'
}

setup() {
    if need_libusb; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "[setup] installing libusb-1.0-0 (needed by open3d)" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
        else
            echo "[setup] warning: libusb-1.0 is missing; install it (Debian: apt-get install libusb-1.0-0) for open3d" >&2
        fi
    fi
    local py=${PYTHON:-}
    if [ -z "$py" ]; then
        if command -v python3.11 >/dev/null; then py=python3.11; else py=python3; fi
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[setup] creating $VENV with $py" >&2
        "$py" -m venv "$VENV"
    fi
    local want
    want=$(cat pyproject.toml dev.sh | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
        echo "[setup] installing depthslam and its dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
        "$VENV/bin/python" -m pip install -q -e ".[torch,dev]"
        echo "$want" > "$VENV/.installed"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    demo)
        setup
        exec "$VENV/bin/depthslam" run --out out/demo "$@"
        ;;
    test)
        setup
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        sed -n '2,7p' "$0" >&2
        exit 2
        ;;
esac
