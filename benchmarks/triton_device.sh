#!/bin/bash
# One device call of the Triton benchmarks: installs this checkout's package layout under
# /tmp/after (and, with BEFORE=dir, an earlier checkout under /tmp/before), installs carried
# wheels from .whl (flash-linear-attention for the GLA step), then runs one mode, writing JSON
# and logs under $OUT:
#   profile  threshold tests under the machine's numpy; triton_linear --profile --sweep
#            (exactness, stage profile, tile sweeps); e2e; with BEFORE, the same for that tree
#   decode   triton_decode (every decode path, six shapes), e2e batches 1/8/32, the tiny LM
#   ncu      Nsight Compute over the decode kernels (triton_ncu.py)
#   check    exactness table and the small shapes' decode rows
#   attention the integer attention: its tests on the GPU, the score kernel's exactness and
#            timing against bf16 (triton_attention.py), then the check mode
# Usage: benchmarks/triton_device.sh MODE
set -u
MODE=${1:-decode}
here=$(cd "$(dirname "$0")/.." && pwd)
install() {  # $1 source tree, $2 target: the package layout of pyproject.toml, by links
    mkdir -p "$2/sbcompile" && cp -r "$1"/sbcompile/. "$2/sbcompile/"
    for d in runtime backends frontends passes; do ln -sfn "$1/$d" "$2/sbcompile/$d"; done
}
install "$here" /tmp/after
site=/tmp/site
ls "$here"/.whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps \
    --no-compile --target $site "$here"/.whl/*.whl >/dev/null 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv
cd "$here"
export PYTHONPATH=/tmp/after:$site
case "$MODE" in
profile)
    (cd /tmp && timeout 60 python3 -m pytest -q -p no:cacheprovider \
        "$here/tests/test_spike_ops.py" 2>&1 | tail -3)  # from /tmp: the checkout would shadow
    if [ -n "${BEFORE:-}" ]; then
        install "$BEFORE" /tmp/before
        (cd "$BEFORE" && PYTHONPATH=/tmp/before:$site timeout 120 python3 \
            benchmarks/triton_linear.py --quick --skip-check --out "$OUT/before" \
            > "$OUT/before_linear.log" 2>&1;
         PYTHONPATH=/tmp/before:$site timeout 45 python3 benchmarks/triton_e2e.py \
            --out "$OUT/before" >> "$OUT/before_linear.log" 2>&1) || echo "before run failed"
    fi
    timeout 330 python3 benchmarks/triton_linear.py --quick --profile --sweep --sweep-event \
        --out "$OUT" > "$OUT/linear.log" 2>&1 || echo "linear run failed"
    grep -E "exact|best|Error" "$OUT/linear.log" | head -40
    timeout 100 python3 benchmarks/triton_e2e.py --out "$OUT" > "$OUT/e2e.log" 2>&1 \
        || echo "e2e run failed";;
decode)
    timeout 200 python3 benchmarks/triton_decode.py --out "$OUT" > "$OUT/decode.log" 2>&1 \
        || echo "decode run failed"
    timeout 100 python3 benchmarks/triton_e2e.py --out "$OUT" > "$OUT/e2e.log" 2>&1 \
        || echo "e2e run failed"
    timeout 150 python3 benchmarks/lm_tiny_targets.py -n 8 --targets reference,triton,float \
        > "$OUT/lm.log" 2>&1 || echo "lm run failed"
    cp benchmarks/results/lm_tiny_targets.json "$OUT/" 2>/dev/null
    grep -E '"path"' "$OUT/e2e.log"; tail -4 "$OUT/lm.log";;
ncu)
    timeout 100 ncu --clock-control none -k regex:'dense_gemv|int8_gemm|w8a16|event_gemv' \
        --launch-skip 4 --launch-count 4 --section SpeedOfLight --section LaunchStats \
        --section Occupancy --section MemoryWorkloadAnalysis --section WarpStateStats \
        python3 benchmarks/triton_ncu.py > "$OUT/ncu.txt" 2>&1 || echo "ncu failed"
    grep -E "_kernel|Duration|Memory Throughput|Registers Per|Achieved Occupancy" \
        "$OUT/ncu.txt" | head -40;;
check)
    timeout 100 python3 benchmarks/triton_linear.py --check-only --out "$OUT" \
        > "$OUT/check.log" 2>&1
    grep -E "exact" "$OUT/check.log"
    timeout 60 python3 benchmarks/triton_decode.py --small --out "$OUT" > "$OUT/decode.log" 2>&1
    grep -E "method=" "$OUT/decode.log" | cut -c1-110;;
attention)
    (cd /tmp && timeout 120 python3 -m pytest -q -p no:cacheprovider \
        "$here/tests/test_spike_attention.py" "$here/tests/test_spike_ops.py" 2>&1 | tail -3)
    timeout 240 python3 benchmarks/triton_attention.py --out "$OUT" > "$OUT/attention.log" 2>&1 \
        || echo "attention run failed"
    grep -E "exact|layer|Error|error" "$OUT/attention.log" | head -20
    timeout 100 python3 benchmarks/triton_linear.py --check-only --out "$OUT" \
        > "$OUT/check.log" 2>&1
    grep -E "exact" "$OUT/check.log";;
esac
