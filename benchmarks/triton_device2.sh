#!/bin/bash
# Second device call: decode paths on six shapes, e2e, and an Nsight Compute pass over the
# decode kernels (benchmarks/triton_ncu.py). Results under $OUT.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
source <(sed -n '/^install()/,/^}/p' "$here/benchmarks/triton_device.sh")
install "$here" /tmp/after
site=/tmp/site
ls "$here"/.whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps \
    --no-compile --target $site "$here"/.whl/*.whl >/dev/null 2>&1
cd "$here"
export PYTHONPATH=/tmp/after:$site
timeout 240 python3 benchmarks/triton_decode.py --out "$OUT" > "$OUT/decode.log" 2>&1 \
    || echo "decode run failed"
grep -E "Error|error" "$OUT/decode.log" | head
timeout 100 python3 benchmarks/triton_e2e.py --out "$OUT" > "$OUT/e2e.log" 2>&1 \
    || echo "e2e run failed"
timeout 100 ncu --clock-control none -k regex:'dense_gemv|int8_gemm|w8a16|event_gemv' \
    --launch-skip 4 --launch-count 4 --section SpeedOfLight --section LaunchStats \
    --section Occupancy --section MemoryWorkloadAnalysis --section WarpStateStats \
    python3 benchmarks/triton_ncu.py > "$OUT/ncu.txt" 2>&1 || echo "ncu failed"
python3 - "$OUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + "/triton_decode.json"))
for r in d["rows"]:
    print(r["k"], r["n"], r["m"], r["method"], r.get("variant", r.get("prefetch", "")),
          r.get("density", ""), r["us"])
PY
grep -E '"path"' "$OUT/e2e.log"
grep -E "dense_gemv|int8_gemm|w8a16|event_gemv|Duration|Memory Throughput|Registers Per|Achieved Occupancy|Stall" "$OUT/ncu.txt" | head -60
