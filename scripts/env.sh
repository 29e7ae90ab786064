#!/usr/bin/env bash
# Create or update the project's Python environment (.venv) from uv.lock.
# Usage: scripts/env.sh [EXTRA...]   e.g. scripts/env.sh dev airflow
# Needs python3 (>= 3.11) and access to PyPI; uv itself is installed into .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: imagegate needs Python >= 3.11 as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    echo "==> installing uv $UV_VERSION into .tools/"
    "$PYTHON" -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
extras=()
for extra in "${@:-dev}"; do extras+=(--extra "$extra"); done
echo "==> syncing .venv from uv.lock (extras: ${*:-dev})"
# --compile-bytecode: write .pyc now, as pip does; imports stay fast where PYTHONDONTWRITEBYTECODE is set
UV_PYTHON_DOWNLOADS=never .tools/bin/uv sync --frozen --quiet --compile-bytecode --python "$PYTHON" "${extras[@]}"
.venv/bin/python -m compileall -q imagegate airflow_plugin dagster_integration >/dev/null
