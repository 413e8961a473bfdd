package tensor

import (
	"math"
	"os"
	"sync"
)

// The activation pool: model code takes the destinations of its kernel
// calls from Empty and hands intermediates it no longer reads back with
// Release, so that a UNet or VAE pass reuses a working set of buffers
// instead of allocating (and page-faulting, and zeroing) fresh memory for
// every op and leaving the rest to the garbage collector. Buffers are kept
// per exact length, up to poolMaxBytes in all; TrimPool drops them.
//
// With GOSD_POOL_POISON=1 every released buffer is filled with NaN, so a
// tensor read after its release, or a kernel that leaves part of an Empty
// destination unwritten, shows up as NaN in the result; the model tests
// turn it on.

const poolMaxBytes = 1 << 30

var pool = struct {
	sync.Mutex
	free   map[int][][]float32
	bytes  int64
	poison bool
	off    bool
}{free: map[int][][]float32{}, poison: os.Getenv("GOSD_POOL_POISON") == "1",
	off: os.Getenv("GOSD_POOL") == "off"}

// Empty returns an F32 tensor of the given shape whose elements are
// unspecified (a released buffer of the same length when the pool has one,
// else zeros). Use it for destinations a kernel writes completely.
func Empty(shape ...int) *Tensor {
	n := Numel(shape)
	pool.Lock()
	if l := pool.free[n]; len(l) > 0 {
		buf := l[len(l)-1]
		l[len(l)-1] = nil
		pool.free[n] = l[:len(l)-1]
		pool.bytes -= int64(4 * n)
		pool.Unlock()
		return &Tensor{Shape: append([]int(nil), shape...), DType: F32, F32: buf}
	}
	pool.Unlock()
	return New(shape...)
}

// Release hands the buffers of these F32 tensors to the pool for Empty to
// reuse, and frees the device memory of device tensors (Storage.Free). The
// caller must hold the only use of each buffer: no other tensor (a Reshape
// of it, say) may be read afterwards. Nil tensors are skipped,
// and a buffer already released is not taken twice.
func Release(ts ...*Tensor) {
	for _, t := range ts {
		if t != nil && t.Dev != nil {
			t.Dev.Free()
		}
	}
	if pool.off {
		return
	}
	pool.Lock()
	defer pool.Unlock()
	for _, t := range ts {
		if t == nil || t.Dev != nil || t.DType != F32 || len(t.F32) == 0 || cap(t.F32) != len(t.F32) {
			continue
		}
		n := len(t.F32)
		if pool.bytes+int64(4*n) > poolMaxBytes {
			continue
		}
		dup := false
		for _, b := range pool.free[n] {
			if &b[0] == &t.F32[0] {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if pool.poison {
			nan := float32(math.NaN())
			for i := range t.F32 {
				t.F32[i] = nan
			}
		}
		pool.free[n] = append(pool.free[n], t.F32)
		pool.bytes += int64(4 * n)
	}
}

// PoisonPool turns NaN-filling of released buffers on or off (see the
// package's pool notes; GOSD_POOL_POISON=1 turns it on at start).
func PoisonPool(on bool) {
	pool.Lock()
	pool.poison = on
	pool.Unlock()
}

// TrimPool drops every pooled buffer (the garbage collector then frees
// them) and returns the bytes it held.
func TrimPool() int64 {
	pool.Lock()
	defer pool.Unlock()
	b := pool.bytes
	pool.free, pool.bytes = map[int][][]float32{}, 0
	return b
}
