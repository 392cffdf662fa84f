#!/bin/bash
# One device call for SmolLM2: one real decoder layer's integer values in the PyTorch program on
# the GPU against the reference (the artifact and input smollm2_layer_targets.py --save wrote, in
# LAYER_DIR), then decode tokens/s, bf16 vs torchao W8A8 vs the spiking form, batches 1/8/32
# (smollm2_decode.py). Installs this checkout's package layout under /tmp/sb and the carried
# wheels of .whl (WHEELS, default ../../.whl from a staged copy); JSON and logs under $OUT.
# Usage: benchmarks/smollm2_device.sh LAYER_DIR
set -u
LAYER_DIR=$1
here=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=${WHEELS:-$here/../../.whl}
mkdir -p /tmp/sb/sbcompile && cp -r "$here"/sbcompile/. /tmp/sb/sbcompile/
for d in runtime backends frontends passes; do ln -sfn "$here/$d" "/tmp/sb/sbcompile/$d"; done
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl \
    > /dev/null 2>&1
export PYTHONPATH=/tmp/sb:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
cd "$here"
timeout 200 python3 benchmarks/smollm2_layer_targets.py --load "$LAYER_DIR" --device cuda \
    --targets torch > "$OUT/layer_targets.log" 2>&1; tail -3 "$OUT/layer_targets.log"
cp benchmarks/results/smollm2_layer_targets_cuda.json "$OUT/" 2>/dev/null
timeout 300 python3 benchmarks/smollm2_decode.py --device cuda > "$OUT/decode.log" 2>&1
tail -12 "$OUT/decode.log"
cp benchmarks/results/smollm2_decode.json "$OUT/" 2>/dev/null
