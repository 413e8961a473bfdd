// Package rng produces Gaussian noise that matches PyTorch's random generators,
// so that a seed gives the same starting latent as PyTorch-based tools:
//
//   - "cuda": torch.randn on a CUDA device, the default noise of AUTOMATIC1111
//     (Philox4x32-10 counter-based generator with curand's Box-Muller).
//     Matches the golden run's noise bit for bit; a real GPU's fast sine
//     intrinsic can differ by about 1e-6.
//   - "cpu": torch.randn on the CPU, the default noise of ComfyUI (mt19937 with
//     PyTorch's own uniform and normal transforms), as PyTorch's AVX2 kernels
//     compute it on x86 CPUs with AVX2. Bit for bit against PyTorch 1.13.
//   - "cpu-plain": the same with PyTorch's portable (non-AVX2) kernels, used on
//     other CPUs (ARM, no AVX2, and as far as we know PyTorch 2.x running its
//     AVX-512 kernels). Those call glibc's float logf/sinf/cosf, which are not
//     always correctly rounded: about 2% of values are 1-2 float32 ulps off.
//
// Each Source is a stream: successive Randn calls continue it the way
// successive torch.randn calls on one freshly seeded generator would. Sources
// are not safe for concurrent use. The CPU generator, like PyTorch's, uses
// only the low 32 bits of the seed.
package rng

import (
	"fmt"
	"strings"
)

// Source is a seeded stream of standard normal float32 samples.
type Source interface {
	// Randn returns n samples, as torch.randn(n) (or any shape with n
	// elements, in C order) would on the next call to the same generator.
	// n <= 0 gives an empty slice and leaves the stream unchanged.
	Randn(n int) []float32
}

// Kinds lists the generator kinds New accepts.
var Kinds = []string{"cuda", "cpu", "cpu-plain"}

// New returns a Source of the given kind (one of Kinds, see the package doc),
// seeded as torch.manual_seed(seed) would seed it.
func New(kind string, seed uint64) (Source, error) {
	switch strings.ToLower(kind) {
	case "cuda":
		return NewPhilox(seed), nil
	case "cpu":
		return NewCPU(seed), nil
	case "cpu-plain":
		return NewCPUVariant(seed, true), nil
	}
	return nil, fmt.Errorf("rng: unknown generator kind %q (valid: %s)", kind, strings.Join(Kinds, ", "))
}
