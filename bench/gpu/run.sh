#!/usr/bin/env bash
# bench/gpu/run.sh: the prepared GPU check for a machine with an NVIDIA GPU,
# a CUDA toolkit (nvcc, any version >= 11.8), CMake and a C++ compiler, but
# no Go. It
#   1. builds libgosd_cuda.so there with CMake and the local nvcc (sm_90 by
#      default; CUDA_ARCHS=80 for an A100),
#   2. runs the test binaries built beforehand on a Go machine with
#      `make -f cuda.mk cuda-device-bins` (build/gpu/{cuda,tensor}.test, linked
#      against libgosd_cuda.so only, so they use the library built in step 1),
#   3. writes $OUT/results.json: build status, test pass/fail/skip counts and
#      failures, every CUDA-vs-CPU parity comparison, and the benchmark
#      TFLOP/s, plus the raw logs next to it.
# Usage: OUT=/some/dir bench/gpu/run.sh [--dry-run]
# --dry-run is for a machine without a GPU: the same steps, and tests that
# skip for lack of a device are expected rather than reported as a problem.
set -u
export PATH="$PATH:/usr/local/cuda/bin"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$ROOT/build/gpu-out}
BINS=${GOSD_GPU_BINS:-$ROOT/build/gpu}
LIBDIR=${GOSD_CUDA_DEVICE_BUILD:-$ROOT/build/cuda-device}
ARCHS=${CUDA_ARCHS:-90}
DRY=false
[ "${1:-}" = "--dry-run" ] && DRY=true
mkdir -p "$OUT"
: >"$OUT/run.log"
log() { echo "[run.sh $(date -u +%T)] $*" | tee -a "$OUT/run.log"; }
jstr() { printf '"%s"' "$(printf '%s' "$1" | tr -d '\r' | tr '\n' ' ' | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
t0=$(date +%s)
# The tests and benchmarks share one time budget counted from the start, so
# the script ends in time for a 10-minute device call however kernels behave.
BUDGET=${GOSD_GPU_BUDGET:-480}
lim() { # lim SECONDS: SECONDS, or less when the budget runs out (min 1)
	local left=$((t0 + BUDGET - $(date +%s)))
	[ "$left" -lt "$1" ] && echo $((left > 1 ? left : 1)) || echo "$1"
}

# 1. Environment.
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
[ -n "$gpu" ] || gpu="none"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
nvcc_v=$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | head -1)
log "gpu: $gpu; nvcc: ${nvcc_v:-missing}; cmake: $(cmake --version 2>/dev/null | head -1)"
for b in cuda.test tensor.test unet.test; do
	[ -x "$BINS/$b" ] || { log "missing $BINS/$b: run 'make -f cuda.mk cuda-device-bins' on the Go machine"; exit 2; }
done

# 2. Build libgosd_cuda.so with this machine's CUDA.
#    GOSD_CUDA_LIB_DIR names a ready library instead (the host emulation of
#    kernels/emu/run.sh --lib, to rehearse this script on a machine without a GPU;
#    set GOSD_GPU_SD15=0 there, the full-size model is far too slow for it).
lib_status=failed
tb=$(date +%s)
if [ -n "${GOSD_CUDA_LIB_DIR:-}" ]; then
	LIBDIR=$GOSD_CUDA_LIB_DIR
	[ -f "$LIBDIR/libgosd_cuda.so" ] && lib_status=ok
	echo "using $LIBDIR/libgosd_cuda.so" >"$OUT/cmake.log"
elif cmake -S "$ROOT/kernels" -B "$LIBDIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" \
	>"$OUT/cmake.log" 2>&1 && cmake --build "$LIBDIR" -j"$(nproc)" >>"$OUT/cmake.log" 2>&1; then
	lib_status=ok
fi
build_s=$(($(date +%s) - tb))
if [ -n "${GOSD_CUDA_LIB_DIR:-}" ]; then
	log "libgosd_cuda: not built, using $LIBDIR/libgosd_cuda.so ($lib_status)"
else
	log "libgosd_cuda build: $lib_status in ${build_s}s (arch $ARCHS, log cmake.log)"
fi
if [ $lib_status != ok ]; then
	tail -30 "$OUT/cmake.log" | tee -a "$OUT/run.log"
	printf '{"gpu":%s,"nvcc":%s,"lib_build":"failed","build_seconds":%d}\n' "$(jstr "$gpu")" \
		"$(jstr "$nvcc_v")" "$build_s" >"$OUT/results.json"
	exit 1
fi
# The binaries need libgosd_cuda.so from step 2; libgomp (OpenMP of the CPU
# backend) comes from the system or, as a fallback, from the carried copy.
export LD_LIBRARY_PATH="$LIBDIR:${LD_LIBRARY_PATH:-}:$BINS/lib"
export GOSD_CUDA_REPORT="$OUT/parity.jsonl"
: >"$GOSD_CUDA_REPORT"
ldd "$BINS/tensor.test" >"$OUT/ldd.txt" 2>&1

# 3. Tests (kernel-level, then backend parity against the CPU backend), each
# test function in its own process, in its package directory as `go test`
# would run it: a kernel fault poisons its CUDA context, and this way it
# costs one test, not the rest. A test that crashes or times out is logged
# as a FAIL line of its own.
run_each() { # log bin pkgdir list-pattern timeout-per-test
	local rc=0 t r lt
	: >"$OUT/$1.log"
	for t in $(cd "$ROOT/$3" && "$BINS/$2" -test.list "$4" 2>/dev/null | grep '^Test'); do
		lt=$(lim "${5%s}")
		(cd "$ROOT/$3" && timeout "$lt" "$BINS/$2" -test.v -test.run "^$t\$" -test.timeout "${lt}s") >>"$OUT/$1.log" 2>&1
		r=$?
		if [ $r -ne 0 ]; then
			rc=1
			grep -q -- "--- FAIL: $t " "$OUT/$1.log" || echo "--- FAIL: $t (crashed or timed out, rc=$r)" >>"$OUT/$1.log"
		fi
	done
	echo $rc
}
rc_kern=$(run_each test_kernels cuda.test bindings/cuda '^Test' 120s)
rc_back=$(run_each test_backend tensor.test sd/tensor '^TestCUDA' 240s)
rc_model=$(run_each test_model unet.test sd/unet '^TestCUDA(UNet|VAE)Tiny$' 180s)
log "tests: kernels rc=$rc_kern, backend rc=$rc_back, tiny models rc=$rc_model"

# The full-size SD 1.5 (random f16 weights made in memory, ~20 s): parity at
# 256x256 against the CPU, then the 512x512 step (batch 1 and 4, CFG) and
# the VAE decode, in one process so the model is made once.
rc_sd15=0
: >"$OUT/sd15.log"
if [ "${GOSD_GPU_SD15:-1}" != 0 ]; then
	(cd "$ROOT/sd/unet" && timeout "$(lim 240)" "$BINS/unet.test" -test.v -test.run '^TestCUDASD15Full$' \
		-test.bench '^BenchmarkCUDASD15' -test.benchtime 10x -test.timeout 600s) >"$OUT/sd15.log" 2>&1
	rc_sd15=$?
fi
grep -q -- "--- FAIL: TestCUDASD15Full" "$OUT/sd15.log" && rc_sd15=1
[ $rc_sd15 -ne 0 ] && ! grep -q -- "--- FAIL: TestCUDASD15Full" "$OUT/sd15.log" &&
	echo "--- FAIL: TestCUDASD15Full (crashed or timed out, rc=$rc_sd15)" >>"$OUT/sd15.log"
if [ "${GOSD_GPU_SD15:-1}" != 0 ]; then
	log "sd15 full: rc=$rc_sd15 (log sd15.log)"
else
	log "sd15 full: skipped (GOSD_GPU_SD15=0)"
fi

# compute-sanitizer on the guard-band kernel tests: memcheck finds
# out-of-bounds accesses (shared memory too), racecheck shared-memory races
# that the host emulation (kernels/emu) cannot see.
san_mem=null
san_race=null
if command -v compute-sanitizer >/dev/null && [ "$gpu" != none ]; then
	for tool in memcheck racecheck; do
		(cd "$ROOT/bindings/cuda" && timeout "$(lim 150)" compute-sanitizer --tool $tool --error-exitcode 9 \
			"$BINS/cuda.test" -test.run 'Guarded|CastExact' -test.v) >"$OUT/sanitizer_$tool.log" 2>&1
		n=$(grep -o 'ERROR SUMMARY: [0-9]*' "$OUT/sanitizer_$tool.log" | grep -o '[0-9]*$' | tail -1)
		[ -n "$n" ] || n=-1 # no summary: the run crashed or timed out
		[ $tool = memcheck ] && san_mem=$n || san_race=$n
	done
	log "compute-sanitizer errors: memcheck $san_mem, racecheck $san_race (-1: no summary)"
else
	log "compute-sanitizer: skipped (not installed, or no GPU)"
fi

# 4. Benchmarks: kernel-only (CUDA events) and backend-level (with the host
# round trip of activations).
(cd "$ROOT/bindings/cuda" && timeout "$(lim 180)" "$BINS/cuda.test" -test.run '^$' -test.bench . -test.benchtime 20x) \
	>"$OUT/bench_kernels.log" 2>&1
rc_bk=$?
(cd "$ROOT/sd/tensor" && timeout "$(lim 120)" "$BINS/tensor.test" -test.run '^$' -test.bench '^BenchmarkCUDA' -test.benchtime 10x) \
	>"$OUT/bench_backend.log" 2>&1
rc_bb=$?
log "benchmarks: kernels rc=$rc_bk, backend rc=$rc_bb (124: timed out)"

# 5. results.json.
LOGS=("$OUT/test_kernels.log" "$OUT/test_backend.log" "$OUT/test_model.log" "$OUT/sd15.log")
count() { grep -c -- "^ *--- $1:" "${LOGS[@]}" | awk -F: '{s += $2} END {print s+0}'; }
pass=$(count PASS)
fail=$(count FAIL)
skip=$(count SKIP)
failed=$(grep -h -- '^--- FAIL:' "${LOGS[@]}" | awk '{printf "%s\"%s\"", (n++ ? "," : ""), $3}')
parity=$(awk 'NF {printf "%s%s", (n++ ? ",\n    " : ""), $0}' "$GOSD_CUDA_REPORT")
bench=$(cat "$OUT/bench_kernels.log" "$OUT/bench_backend.log" "$OUT/sd15.log" | awk '
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name); tf = "null"; ms = "null"; ns = "null"; m = ""
		for (i = 3; i < NF; i += 2) { # value unit pairs after the iteration count
			if ($(i+1) == "TFLOP/s") tf = $i
			if ($(i+1) == "ms/op") ms = $i
			if ($(i+1) == "ns/op") ns = $i
			m = m (m == "" ? "" : ",") "\"" $(i+1) "\":" $i
		}
		printf "%s{\"name\":\"%s\",\"tflops\":%s,\"kernel_ms\":%s,\"ns_per_op\":%s,\"metrics\":{%s}}", (n++ ? ",\n    " : ""), name, tf, ms, ns, m
	}')
expect_gpu=true
$DRY && expect_gpu=false
emulated=false
[ -n "${GOSD_CUDA_LIB_DIR:-}" ] && emulated=true
cat >"$OUT/results.json" <<EOF
{
  "gpu": $(jstr "$gpu"),
  "nvcc": $(jstr "$nvcc_v"),
  "arch": $(jstr "sm_$ARCHS"),
  "dry_run": $DRY,
  "lib_build": "$lib_status",
  "build_seconds": $build_s,
  "tests": {"kernels_rc": $rc_kern, "backend_rc": $rc_back, "tiny_models_rc": $rc_model, "sd15_full_rc": $rc_sd15,
            "pass": $pass, "fail": $fail, "skip": $skip,
            "failed": [$failed], "gpu_expected": $expect_gpu, "library_given": $emulated},
  "bench_rc": {"kernels": $rc_bk, "backend": $rc_bb, "sd15": $rc_sd15},
  "sanitizer_errors": {"memcheck": $san_mem, "racecheck": $san_race},
  "parity": [
    $parity
  ],
  "bench": [
    $bench
  ],
  "seconds": $(($(date +%s) - t0))
}
EOF
log "results: $OUT/results.json (pass $pass, fail $fail, skip $skip)"
if ! $DRY && [ "$skip" -gt 0 ] && [ "$gpu" != none ]; then
	log "warning: $skip tests skipped although a GPU is present; see test_*.log"
fi
[ "$fail" -eq 0 ] && [ "$rc_kern" -eq 0 ] && [ "$rc_back" -eq 0 ] && [ "$rc_model" -eq 0 ] && [ "$rc_sd15" -eq 0 ]
