# cuda.mk: gosd's CUDA side, included from the root Makefile.
#   make cuda-deps         install NVIDIA's CUDA toolkit (Debian non-free
#                          nvidia-cuda-toolkit, CUDA 11.8) when nvcc is missing
#   make cuda-check        compile every kernel for sm_80 and sm_90 into
#                          libgosd_cuda (CMake), then vet, build and link the
#                          cuda-tagged Go code (no GPU needed)
#   make cuda-emu          run the kernels under a host emulation (g++ only,
#                          no toolkit or GPU) against double references, then
#                          the cuda-tagged Go tests on an emulated libgosd_cuda
#   make cuda              libgosd_cuda and bin/gosd-cuda
#   make cuda-device-bins  the test binaries bench/gpu/run.sh runs on a GPU
#                          machine (build/gpu, linked against libgosd_cuda.so)
SHELL := /bin/bash
GO ?= go
NVCC ?= nvcc
CUDA_BUILD ?= build/cuda
CUDA_GPU_BINS ?= build/gpu
CUDA_GO_PKGS := ./bindings/cuda ./sd/tensor
# Empty: the CMake default (sm_80 and sm_90 SASS plus sm_90 PTX).
CUDA_ARCHS ?=

.PHONY: cuda-deps cuda-lib cuda-check cuda-emu cuda cuda-device-bins

# cuda-deps: Debian's toolkit lives in non-free; enable that component in the
# apt sources when it is missing (deb822 or one-line format), then install.
# About 1.6 GB download, 5.5 GB installed, about 2 minutes on a fast mirror.
cuda-deps:
	@if command -v $(NVCC) >/dev/null 2>&1; then exit 0; fi; \
	echo "nvcc not found: installing nvidia-cuda-toolkit from Debian non-free"; \
	for f in /etc/apt/sources.list.d/debian.sources; do \
	  [ -f $$f ] && ! grep -qE '^Components:.*[[:space:]]non-free([[:space:]]|$$)' $$f && \
	    sed -i -E 's/^(Components:.*)$$/\1 contrib non-free/' $$f; \
	done; \
	if [ -f /etc/apt/sources.list ] && grep -qE '^deb .*debian' /etc/apt/sources.list && \
	   ! grep -qE '^deb .*[[:space:]]non-free([[:space:]]|$$)' /etc/apt/sources.list; then \
	  sed -i -E '/^deb .*debian/ s/$$/ contrib non-free/' /etc/apt/sources.list; \
	fi; \
	apt-get update -qq && \
	apt-get install -y -qq -o DPkg::Lock::Timeout=900 --no-install-recommends nvidia-cuda-toolkit >/dev/null
	@command -v $(NVCC) >/dev/null && $(NVCC) --version | tail -1

cuda-lib: cuda-deps
	@cmake -S kernels -B $(CUDA_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  $(if $(CUDA_ARCHS),-DCMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHS)") >/dev/null
	env -u MAKEFLAGS -u MAKELEVEL cmake --build $(CUDA_BUILD) -j$$(nproc)

# cuda-check: CMake compiles every kernels/*.cu for sm_80 and sm_90; the
# cuobjdump line proves both are in the library. Then the Go side is vetted,
# built and linked (test binaries too) against it, in both link forms.
cuda-check: cuda-lib
	@arch=$$(cuobjdump --list-elf $(CUDA_BUILD)/libgosd_cuda.a | grep -oE 'sm_[0-9]+' | sort -u | tr '\n' ' '); \
	  echo "libgosd_cuda.a holds: $$arch"; \
	  case "$$arch" in *sm_80*sm_90*) ;; *) echo "missing sm_80 or sm_90 code" >&2; exit 1;; esac
	$(GO) vet -tags cuda $(CUDA_GO_PKGS) ./sd/device
	$(GO) build -tags cuda ./...
	@for p in $(CUDA_GO_PKGS); do \
	  $(GO) test -tags cuda -c -o /dev/null $$p || exit 1; \
	  $(GO) test -tags cuda,cudashared -c -o /dev/null $$p || exit 1; \
	done
	$(GO) test -tags cuda -count=1 -run 'NoDevice|InvalidArguments|CUDAShapeErrors' $(CUDA_GO_PKGS)
	@echo "cuda-check: ok"

# cuda-emu: kernels/emu/emu.h runs each CUDA thread as a fiber, so the
# kernels' tiling, masking and barriers are checked without a GPU. The same
# script links a libgosd_cuda.so from the emulated kernels and a host
# runtime, and the cuda-tagged Go tests run on it: the bindings, the
# backend ops (SD-sized cases skip: see tooBigToEmulate), device-resident
# activations, weight prefetch, the tiny SD 1.5 and SDXL UNets and VAE
# against the CPU backend, and a whole tiny generation through the pipeline
# (PSNR against the CPU image). No CUDA toolkit or GPU needed (~2 min).
CUDA_EMU := build/cuda-emu
cuda-emu:
	kernels/emu/run.sh $(CUDA_EMU)
	LD_LIBRARY_PATH=$(CURDIR)/$(CUDA_EMU)/lib CGO_LDFLAGS="-L$(CURDIR)/$(CUDA_EMU)/lib" \
	  $(GO) test -tags cuda,cudashared -count=1 -timeout 20m \
	  -run '^Test(NoDeviceError|InvalidArguments|CastExact|.*Guarded)$$|^TestCUDA' \
	  ./bindings/cuda ./sd/tensor
	set -o pipefail; LD_LIBRARY_PATH=$(CURDIR)/$(CUDA_EMU)/lib CGO_LDFLAGS="-L$(CURDIR)/$(CUDA_EMU)/lib" \
	  $(GO) test -tags cuda,cudashared -count=1 -timeout 20m -v -run '^TestCUDA(UNet|VAE|Generate)Tiny$$' ./sd/unet ./sd \
	  | grep -E '^(---|ok|FAIL|PASS)|cuda_test'

cuda: cuda-lib
	@mkdir -p bin
	$(GO) build -tags cuda -o bin/gosd-cuda ./cmd/gosd

# cuda-device-bins: test binaries for a GPU machine without Go. They link
# only against libgosd_cuda.so (tag cudashared), which bench/gpu/run.sh
# rebuilds there with that machine's CUDA; libgomp goes along as a fallback.
cuda-device-bins: cuda-lib
	@mkdir -p $(CUDA_GPU_BINS)/lib
	$(GO) test -tags cuda,cudashared -c -ldflags='-s -w' -o $(CUDA_GPU_BINS)/tensor.test ./sd/tensor
	$(GO) test -tags cuda,cudashared -c -ldflags='-s -w' -o $(CUDA_GPU_BINS)/cuda.test ./bindings/cuda
	$(GO) test -tags cuda,cudashared -c -ldflags='-s -w' -o $(CUDA_GPU_BINS)/unet.test ./sd/unet
	@cp -L $$(gcc -print-file-name=libgomp.so.1) $(CUDA_GPU_BINS)/lib/
	@ls -la $(CUDA_GPU_BINS) $(CUDA_GPU_BINS)/lib
