#!/bin/bash
# One device call of the tensor-parallel decode benchmark (benchmarks/tp_decode.py) on a machine
# of W GPUs: installs this checkout's package layout under /tmp/tp (as triton_device.sh does),
# keeps NVLink multicast off, and runs W = 1, 2 (and 4, 8 where there are as many GPUs) at one
# and at eight tokens a step, writing tp_decode_wW_mM.json and a log under $OUT.
# Usage: benchmarks/tp_decode_device.sh
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p /tmp/tp/sbcompile && cp -r "$here"/sbcompile/. /tmp/tp/sbcompile/
for d in runtime backends frontends passes; do ln -sfn "$here/$d" "/tmp/tp/sbcompile/$d"; done
export PYTHONPATH=/tmp/tp PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
nvidia-smi topo -m 2>&1 | head -12
gpus=$(python3 -c 'import torch; print(torch.cuda.device_count())')
cd "$here"
for w in 1 2 4 8; do
    [ "$w" -le "$gpus" ] || break
    for m in 1 8; do
        timeout 150 python3 -m torch.distributed.run --standalone --nproc_per_node "$w" \
            benchmarks/tp_decode.py --rows "$m" --steps 30 --out "$OUT" \
            >> "$OUT/tp_decode.log" 2>&1 || echo "w=$w m=$m failed"
        grep -h tokens_per_s "$OUT"/tp_decode_w"$w"_m"$m".json 2>/dev/null
    done
done
tail -5 "$OUT/tp_decode.log"
