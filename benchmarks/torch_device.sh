#!/bin/bash
# One device call of the torch-target benchmarks: installs this checkout's package layout under
# /tmp/sbc (links, as pyproject's package-dir maps them) and the wheels carried in .whl (torchao,
# and what the device image lacks), then runs benchmarks/torch_gpu.py with the sections given,
# writing JSON and the log under $OUT.
#   Usage: benchmarks/torch_device.sh [SECTION ...]
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p /tmp/sbc/sbcompile && cp -r "$here"/sbcompile/. /tmp/sbc/sbcompile/
for d in runtime backends frontends passes; do ln -sfn "$here/$d" "/tmp/sbc/sbcompile/$d"; done
wheels=${WHEELS:-$here/.whl}
ls "$wheels"/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps \
    --no-compile --target /tmp/site "$wheels"/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/sbc:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
cd "$here"
python3 benchmarks/torch_gpu.py --out "$OUT" --only "$@" 2>&1 | tee "$OUT/torch_gpu.log" \
    | grep -v -E "^\s*$|Warning|warn"
