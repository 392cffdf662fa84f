#!/bin/bash
# One device call: install the checkout it runs in (and, with BEFORE=dir, an earlier checkout
# beside it), run the threshold tests under the machine's numpy, then the Triton benchmarks of
# both, writing JSON and logs under $OUT. Usage: benchmarks/triton_device.sh [quick|profile]
set -u
MODE=${1:-quick}
here=$(cd "$(dirname "$0")/.." && pwd)
install() {  # $1 source tree, $2 target: the package layout of pyproject.toml, by links
    mkdir -p "$2/sbcompile" && cp -r "$1"/sbcompile/. "$2/sbcompile/"
    for d in runtime backends frontends passes; do ln -sfn "$1/$d" "$2/sbcompile/$d"; done
}
install "$here" /tmp/after
site=/tmp/site  # wheels carried in .whl (flash-linear-attention for the GLA step), if any
ls "$here"/.whl/*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-index --no-deps \
    --no-compile --target $site "$here"/.whl/*.whl >/dev/null 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv
(cd /tmp && PYTHONPATH=/tmp/after:$site timeout 60 python3 -m pytest -q -p no:cacheprovider \
    "$here/tests/test_spike_ops.py" 2>&1 | tail -3)  # from /tmp: the checkout would shadow
cd "$here"
if [ -n "${BEFORE:-}" ]; then
    install "$BEFORE" /tmp/before
    (cd "$BEFORE" && PYTHONPATH=/tmp/before:$site timeout 120 python3 benchmarks/triton_linear.py \
        --quick --skip-check --out "$OUT/before" > "$OUT/before_linear.log" 2>&1;
     PYTHONPATH=/tmp/before:$site timeout 45 python3 benchmarks/triton_e2e.py --out "$OUT/before" \
        >> "$OUT/before_linear.log" 2>&1) || echo "before run failed"
    tail -4 "$OUT/before_linear.log"
fi
flags="--quick"
[ "$MODE" = profile ] && flags="--quick --profile --sweep --sweep-event"
PYTHONPATH=/tmp/after:$site timeout 330 python3 benchmarks/triton_linear.py $flags --out "$OUT" \
    > "$OUT/linear.log" 2>&1 || echo "linear run failed"
grep -E "exact|MISMATCH|best|Error|error" "$OUT/linear.log" | head -40
PYTHONPATH=/tmp/after:$site timeout 100 python3 benchmarks/triton_e2e.py --out "$OUT" \
    > "$OUT/e2e.log" 2>&1 || echo "e2e run failed"
tail -8 "$OUT/e2e.log"
