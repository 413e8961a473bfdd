#!/usr/bin/env bash
# kernels/emu/run.sh: compile the CUDA kernels for the host emulation of
# emu.h (g++ >= 12; no GPU or CUDA toolkit needed), then
#   - link and run emu_test.cpp, which checks them against double
#     references (skipped with --lib), and
#   - link BUILD/lib/libgosd_cuda.so: the whole C ABI of gosd_cuda.h, the
#     emulated kernels with the runtime and GEMMs of runtime_emu.cpp, on
#     which the cuda-tagged Go code runs (tag cudashared, LD_LIBRARY_PATH).
# Usage: kernels/emu/run.sh [--lib] [BUILD, default build/cuda-emu]
set -euo pipefail
RUN_TEST=true
if [ "${1:-}" = "--lib" ]; then
	RUN_TEST=false
	shift
fi
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
	"$CXX" "${FLAGS[@]}" -include "$HERE/emu.h" -c "$OUTDIR/$f.cpp" -o "$OUTDIR/$f.o" &
	pids+=($!)
	objs+=("$OUTDIR/$f.o")
done
"$CXX" "${FLAGS[@]}" -c "$HERE/runtime_emu.cpp" -o "$OUTDIR/runtime_emu.o" &
pids+=($!)
if $RUN_TEST; then
	"$CXX" "${FLAGS[@]}" -c "$HERE/emu_test.cpp" -o "$OUTDIR/emu_test.o" &
	pids+=($!)
fi
for p in "${pids[@]}"; do
	wait "$p"
done
"$CXX" -shared -pthread "${objs[@]}" "$OUTDIR/runtime_emu.o" -o "$OUTDIR/lib/libgosd_cuda.so"
if $RUN_TEST; then
	"$CXX" -pthread "${objs[@]}" "$OUTDIR/emu_test.o" -o "$OUTDIR/emu_test"
	"$OUTDIR/emu_test"
fi
