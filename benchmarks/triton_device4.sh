#!/bin/bash
# Short device call: exactness table (incl. the grouped M=2048 acc store) and the fused
# dense-count GEMV on the small shapes with its final tiles. Results under $OUT.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
source <(sed -n '/^install()/,/^}/p' "$here/benchmarks/triton_device.sh")
install "$here" /tmp/after
cd "$here"
export PYTHONPATH=/tmp/after
timeout 100 python3 benchmarks/triton_linear.py --check-only --out "$OUT" > "$OUT/check.log" 2>&1
grep -E "exact" "$OUT/check.log"
timeout 60 python3 benchmarks/triton_decode.py --small --out "$OUT" > "$OUT/decode.log" 2>&1
grep -E "method=(dense|gemm_split|w8a16)" "$OUT/decode.log" | cut -c1-110
