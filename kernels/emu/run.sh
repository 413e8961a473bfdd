#!/usr/bin/env bash
# kernels/emu/run.sh: build and run the host emulation check of the CUDA
# kernels (emu.h, emu_test.cpp) with g++ >= 12; no GPU or CUDA toolkit needed.
# Usage: kernels/emu/run.sh [build dir, default build/cuda-emu]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
K=$(dirname "$HERE")
OUTDIR=${1:-$(dirname "$K")/build/cuda-emu}
CXX=${CXX:-g++}
mkdir -p "$OUTDIR"
FLAGS=(-std=c++20 -O2 -pthread -w -I"$HERE/include" -I"$K" -I"$K/include")
objs=()
pids=()
for f in attention conv2d group_norm layer_norm elementwise cast; do
	python3 "$HERE/transform.py" "$K/$f.cu" "$OUTDIR/$f.cpp"
	"$CXX" "${FLAGS[@]}" -include "$HERE/emu.h" -c "$OUTDIR/$f.cpp" -o "$OUTDIR/$f.o" &
	pids+=($!)
	objs+=("$OUTDIR/$f.o")
done
"$CXX" "${FLAGS[@]}" -c "$HERE/emu_test.cpp" -o "$OUTDIR/emu_test.o" &
pids+=($!)
for p in "${pids[@]}"; do
	wait "$p"
done
"$CXX" -pthread "${objs[@]}" "$OUTDIR/emu_test.o" -o "$OUTDIR/emu_test"
"$OUTDIR/emu_test"
