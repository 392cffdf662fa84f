#!/bin/bash
# Final device call: decode paths on six shapes, e2e batches 1/8/32, and the tiny LM generating
# on the GPU (tokens equal to the reference's). Results under $OUT.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
source <(sed -n '/^install()/,/^}/p' "$here/benchmarks/triton_device.sh")
install "$here" /tmp/after
site=/tmp/site
ls "$here"/.whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps \
    --no-compile --target $site "$here"/.whl/*.whl >/dev/null 2>&1
cd "$here"
export PYTHONPATH=/tmp/after:$site
timeout 200 python3 benchmarks/triton_decode.py --out "$OUT" > "$OUT/decode.log" 2>&1 \
    || echo "decode run failed"
timeout 100 python3 benchmarks/triton_e2e.py --out "$OUT" > "$OUT/e2e.log" 2>&1 \
    || echo "e2e run failed"
timeout 150 python3 benchmarks/lm_tiny_targets.py -n 8 --targets reference,triton,float \
    > "$OUT/lm.log" 2>&1 || echo "lm run failed"
cp benchmarks/results/lm_tiny_targets.json "$OUT/" 2>/dev/null
python3 - "$OUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1] + "/triton_decode.json"))
for r in d["rows"]:
    print(r["k"], r["n"], r["m"], r["method"], r.get("variant", r.get("prefetch", "")),
          r.get("density", ""), r["us"])
PY
grep -E '"path"' "$OUT/e2e.log"
tail -6 "$OUT/lm.log"
