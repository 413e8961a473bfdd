#!/usr/bin/env bash
# kernels/emu/lib.sh: build build/cuda-emu/lib/libgosd_cuda.so, the whole C ABI
# of gosd_cuda.h with the kernels under the host emulation (emu.h) and the
# runtime and GEMMs of runtime_emu.cpp, so the cuda-tagged Go code (tag
# cudashared) runs on a machine without a GPU. g++ >= 12 only.
# Usage: kernels/emu/lib.sh [build dir, default build/cuda-emu]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
K=$(dirname "$HERE")
OUTDIR=${1:-$(dirname "$K")/build/cuda-emu}
CXX=${CXX:-g++}
mkdir -p "$OUTDIR/lib"
FLAGS=(-std=c++20 -O2 -fPIC -pthread -w -I"$HERE/include" -I"$K" -I"$K/include")
objs=()
pids=()
for f in attention conv2d group_norm layer_norm elementwise cast; do
	python3 "$HERE/transform.py" "$K/$f.cu" "$OUTDIR/$f.cpp"
	"$CXX" "${FLAGS[@]}" -include "$HERE/emu.h" -c "$OUTDIR/$f.cpp" -o "$OUTDIR/$f.pic.o" &
	pids+=($!)
	objs+=("$OUTDIR/$f.pic.o")
done
"$CXX" "${FLAGS[@]}" -c "$HERE/runtime_emu.cpp" -o "$OUTDIR/runtime_emu.pic.o" &
pids+=($!)
objs+=("$OUTDIR/runtime_emu.pic.o")
for p in "${pids[@]}"; do
	wait "$p"
done
"$CXX" -shared -pthread "${objs[@]}" -o "$OUTDIR/lib/libgosd_cuda.so"
echo "$OUTDIR/lib/libgosd_cuda.so"
