package main

import (
	"bufio"
	"context"
	"io"
	"strconv"
	"strings"

	"github.com/gosd/gosd/sd/rng"
)

// maxNoiseCount bounds --count of gosd noise (a 1024x1024 SDXL latent has
// 2^18 values; this allows 256 of them).
const maxNoiseCount = 1 << 26

// runNoise implements `gosd noise --rng cpu|cuda --seed N --count K`: it
// prints, one per line, the K float32 values torch.randn(K) returns right
// after torch.manual_seed(N) on that kind of device (see package rng), in the
// shortest decimal form that reads back to the same float32.
//
// For "cuda" the values of a shorter draw are a prefix of a longer one (each
// element has its own Philox subsequence), unless --cuda-threads limits the
// threads below K. For "cpu" they are not in general: PyTorch draws fewer than
// 16 values with a float64 transform and transforms the tail of a count that
// is not a multiple of 16 separately.
func runNoise(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("noise", stderr)
	kind := fs.String("rng", "cuda", "generator: "+strings.Join(rng.Kinds, ", ")+
		" (cuda: torch.randn on a CUDA device, cpu: on an x86 CPU with AVX2, cpu-plain: PyTorch's portable CPU kernels)")
	seed := fs.Uint64("seed", 0, "seed, as torch.manual_seed(N)")
	count := fs.Int("count", 8, "number of values K, as torch.randn(K)")
	threads := fs.Int("cuda-threads", 0, "for --rng cuda: the GPU's resident-thread limit (0: one thread per value)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	if *count < 1 || *count > maxNoiseCount {
		return usagef("--count %d, want 1..%d", *count, maxNoiseCount)
	}
	if *threads < 0 {
		return usagef("--cuda-threads %d, want >= 0", *threads)
	}
	src, err := rng.New(*kind, *seed)
	if err != nil {
		return usagef("--rng %q: want one of %s", *kind, strings.Join(rng.Kinds, ", "))
	}
	if *threads > 0 {
		if strings.ToLower(*kind) != "cuda" {
			return usagef("--cuda-threads needs --rng cuda")
		}
		src = rng.NewPhiloxThreads(*seed, *threads)
	}
	w := bufio.NewWriter(stdout)
	buf := make([]byte, 0, 32)
	for _, v := range src.Randn(*count) {
		buf = strconv.AppendFloat(buf[:0], float64(v), 'g', -1, 32)
		buf = append(buf, '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return w.Flush()
}
