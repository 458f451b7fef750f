#!/usr/bin/env bash
# Builds the wheel and the sdist (python -m build), installs the wheel into a
# fresh virtual environment and runs .ci/wheel_smoke.py from outside the
# source tree. The environment reuses the installed TensorFlow
# (--system-site-packages); keras_cc itself comes from the wheel.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

python -m build --outdir "$work/dist" "$repo" >"$work/build.log" 2>&1 || {
    cat "$work/build.log"
    exit 1
}
shopt -s nullglob
wheels=("$work"/dist/keras_cc-*-py3-none-any.whl)
sdists=("$work"/dist/keras_cc-*.tar.gz)
if [[ ${#wheels[@]} -ne 1 || ${#sdists[@]} -ne 1 ]]; then
    echo "expected one wheel and one sdist, got: $(ls "$work/dist")" >&2
    exit 1
fi
version="$(basename "${wheels[0]}" | cut -d- -f2)"
echo "built $(basename "${wheels[0]}") and $(basename "${sdists[0]}")"

python -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q "${wheels[0]}"
cd "$work"  # outside the source tree: nothing can be imported from it
"$work/venv/bin/python" "$repo/.ci/wheel_smoke.py" "$repo" "$version"
