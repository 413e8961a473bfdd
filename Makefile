# gosd: Stable Diffusion inference in Go.
#   make demo   build gosd, round-trip a real photo through the TAEF2 autoencoder,
#               and generate an image from a small random SD 1.5 checkpoint
#   make test   every test: Go (incl. golden SD 1.5 stages), the forced portable
#               kernel path, and the C kernel tests through CMake
SHELL := /bin/bash
GO ?= go
SHARED ?= ../shared
OUT ?= out
BIN := bin/gosd
TESTTIMEOUT ?= 40m

.PHONY: all deps build demo test test-go test-portable test-c vet clean bench

include cuda.mk

all: build

# deps installs what the build needs on a fresh Debian machine: a C compiler
# for cgo, CMake for the C tests, and the Go modules.
deps:
	@command -v gcc >/dev/null && command -v cmake >/dev/null || { \
	  echo "installing gcc and cmake with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=600 gcc g++ cmake make >/dev/null; }
	@$(GO) mod download

build: deps
	$(GO) build -o $(BIN) ./cmd/gosd

demo: build
	@mkdir -p $(OUT)
	$(BIN) vae roundtrip --encoder $(SHARED)/models/taef2/taef2_encoder.pth \
	  --decoder $(SHARED)/models/taef2/taef2_decoder.pth \
	  --input $(SHARED)/images/kodim01.png --output $(OUT)/kodim01-roundtrip.png
	$(BIN) testmodel --family sd15 --size tiny --dtype f16 --layout single --seed 1 \
	  --output $(OUT)/sd15-tiny.safetensors
	$(BIN) generate --model $(OUT)/sd15-tiny.safetensors --tokenizer $(SHARED)/models/sd15/tokenizer \
	  --prompt "a watercolor painting of a fox in a snowy forest" --negative "low quality" \
	  --width 128 --height 128 --steps 8 --sampler euler_a --seed 42 --output $(OUT)/demo.png
	@echo "demo images: $(OUT)/kodim01-roundtrip.png $(OUT)/demo.png"

# bench is the CPU harness (issue 3): a full-size random SD 1.5 f16 checkpoint
# (made once, 2.1 GB), then kernels (f32 and bf16, GFLOP/s and share of the
# measured peak, PNG chart), seconds per step at 256, 512 and 768, text
# encoder and VAE times, peak memory, the bf16-vs-f32 PSNR and the kernel
# profile of a step; the JSON report goes to $(OUT)/bench.json. About 4 min.
BENCH_MODEL ?= $(OUT)/sd15-full-f16.safetensors
bench: build
	@mkdir -p $(OUT)
	test -f $(BENCH_MODEL) || $(BIN) testmodel --family sd15 --size full --dtype f16 --layout single \
	  --seed 1 --output $(BENCH_MODEL)
	$(BIN) bench --model $(BENCH_MODEL) --tokenizer $(SHARED)/models/sd15/tokenizer --precision bf16 \
	  --steps 3 --accuracy --profile --chart $(OUT)/kernels.png --json-out $(OUT)/bench.json
	@echo "report: $(OUT)/bench.json, chart: $(OUT)/kernels.png"

vet: deps
	$(GO) vet ./...

# CI has no GPU: cuda-check compiles every kernel for sm_80 and sm_90 and
# links the cuda-tagged Go build (installing Debian's CUDA toolkit once);
# cuda-emu runs the kernels and the CUDA backend on a host emulation.
test: vet test-c test-go test-portable cuda-check cuda-emu

# go test runs two packages at once, each with an OpenMP team of all cores:
# passive waiting keeps the teams from spinning against each other.
test-go: deps
	OMP_WAIT_POLICY=passive $(GO) test -timeout $(TESTTIMEOUT) ./...

# Everything must also pass on the portable (no AVX-512) kernels, as on a CPU
# without AVX-512 or AMX (about 4 minutes on 2 cores).
test-portable: deps
	GOSD_CPU=portable OMP_WAIT_POLICY=passive $(GO) test -count=1 -timeout $(TESTTIMEOUT) ./...

test-c: deps
	cmake -S . -B build/c -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/c -j2 >/dev/null
	cd build/c && ctest --output-on-failure

clean:
	rm -rf bin build $(OUT)
