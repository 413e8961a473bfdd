// Package devtest is a tensor.DeviceBackend for tests on machines without a
// GPU: "device" memory is host memory that only this backend can see, and
// every op runs on a host backend after resolving its device tensors. It
// proves that model code keeps its activations on a device exactly as the
// CUDA backend needs (no host slice of a device tensor is ever touched,
// everything allocated is freed, no host round trip inside a model call)
// and gives the same numbers as the host backend it wraps.
//
// It reports, and fails the op for, a device tensor used after its Free and
// a device tensor of another backend. Freed memory is filled with NaN.
package devtest

import (
	"fmt"
	"math"
	"sync"

	"github.com/gosd/gosd/sd/tensor"
)

// Backend runs ops on Host and keeps device tensors in memory of its own.
type Backend struct {
	Host tensor.Backend
	// Round16, as the CUDA backend's tensor-core paths do, rounds the input
	// of Linear and Conv2D to the type of 16-bit weights (values beyond
	// f16's range become infinite).
	Round16 bool

	mu    sync.Mutex
	stats Stats
}

// Stats counts what crossed between host and device.
type Stats struct {
	Live      int   // device tensors allocated and not yet freed
	Peak      int   // the most device tensors live at once
	Allocs    int   // device tensors allocated (Alloc and ToDevice)
	ToDevice  int   // host tensors copied to the device with ToDevice
	ToHost    int   // device tensors copied to the host with ToHost
	HostInput int   // host activations handed to an op (uploaded per call on a real device)
	HostOut   int   // host destinations written by an op (downloaded per call on a real device)
	Prefetch  []int // the number of weights of each PrefetchWeights call
	Trims     int   // TrimPool calls
}

// New wraps host.
func New(host tensor.Backend) *Backend { return &Backend{Host: host} }

// Stats returns the counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stats
	st.Prefetch = append([]int(nil), st.Prefetch...)
	return st
}

// PrefetchWeights records the call (weights live on the host here).
func (b *Backend) PrefetchWeights(ws []*tensor.Tensor) error {
	b.mu.Lock()
	b.stats.Prefetch = append(b.stats.Prefetch, len(ws))
	b.mu.Unlock()
	return nil
}

// TrimPool records the call; freed memory is not pooled here.
func (b *Backend) TrimPool() (int64, error) {
	b.mu.Lock()
	b.stats.Trims++
	b.mu.Unlock()
	return 0, nil
}

// ResetCounts zeroes every counter but Live.
func (b *Backend) ResetCounts() {
	b.mu.Lock()
	b.stats = Stats{Live: b.stats.Live, Peak: b.stats.Live}
	b.mu.Unlock()
}

type storage struct {
	b     *Backend
	data  []float32
	freed bool
}

func (s *storage) Owner() tensor.DeviceBackend { return s.b }

func (s *storage) Free() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.freed {
		return
	}
	s.freed = true
	nan := float32(math.NaN())
	for i := range s.data {
		s.data[i] = nan
	}
	s.b.stats.Live--
}

func (b *Backend) Name() string { return "devtest/" + b.Host.Name() }

func (b *Backend) Alloc(shape ...int) (*tensor.Tensor, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Allocs++
	b.stats.Live++
	b.stats.Peak = max(b.stats.Peak, b.stats.Live)
	s := &storage{b: b, data: make([]float32, tensor.Numel(shape))}
	return &tensor.Tensor{Shape: append([]int(nil), shape...), DType: tensor.F32, Dev: s}, nil
}

func (b *Backend) ToDevice(t *tensor.Tensor) (*tensor.Tensor, error) {
	if t == nil || t.Dev != nil || t.DType != tensor.F32 || len(t.F32) != t.Numel() {
		return nil, fmt.Errorf("devtest: ToDevice of %v", t)
	}
	d, _ := b.Alloc(t.Shape...)
	copy(d.Dev.(*storage).data, t.F32)
	b.mu.Lock()
	b.stats.ToDevice++
	b.mu.Unlock()
	return d, nil
}

func (b *Backend) ToHost(dst []float32, t *tensor.Tensor) error {
	s, err := b.own("to_host", t)
	if err != nil {
		return err
	}
	if len(dst) != t.Numel() {
		return fmt.Errorf("devtest: ToHost of %d values into %d", t.Numel(), len(dst))
	}
	copy(dst, s.data)
	b.mu.Lock()
	b.stats.ToHost++
	b.mu.Unlock()
	return nil
}

func (b *Backend) own(op string, t *tensor.Tensor) (*storage, error) {
	s, ok := t.Dev.(*storage)
	if !ok || s.b != b {
		return nil, &tensor.OpError{Op: op, Shapes: [][]int{t.Shape}, Err: tensor.ErrBackend,
			Detail: "device tensor of another backend"}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.freed {
		return nil, &tensor.OpError{Op: op, Shapes: [][]int{t.Shape}, Err: tensor.ErrBackend,
			Detail: "device tensor used after its release"}
	}
	return s, nil
}

// acts resolves activations: device tensors become host views of their
// memory; host ones are counted (out marks destinations).
func (b *Backend) acts(op string, out bool, ts ...*tensor.Tensor) ([]*tensor.Tensor, error) {
	r := make([]*tensor.Tensor, len(ts))
	for i, t := range ts {
		switch {
		case t == nil:
		case t.Dev == nil:
			r[i] = t
			b.mu.Lock()
			if out {
				b.stats.HostOut++
			} else {
				b.stats.HostInput++
			}
			b.mu.Unlock()
		default:
			s, err := b.own(op, t)
			if err != nil {
				return nil, err
			}
			r[i] = &tensor.Tensor{Shape: t.Shape, DType: tensor.F32, F32: s.data}
		}
	}
	return r, nil
}

// run resolves the destination y and the inputs, then calls f on host views.
func (b *Backend) run(op string, y *tensor.Tensor, in []*tensor.Tensor, f func(y *tensor.Tensor, in []*tensor.Tensor) error) error {
	ys, err := b.acts(op, true, y)
	if err != nil {
		return err
	}
	xs, err := b.acts(op, false, in...)
	if err != nil {
		return err
	}
	return f(ys[0], xs)
}

// round16 returns x rounded to w's 16-bit type when Round16 is set.
func (b *Backend) round16(x, w *tensor.Tensor) *tensor.Tensor {
	if !b.Round16 || w.DType == tensor.F32 {
		return x
	}
	r := tensor.New(x.Shape...)
	for i, v := range x.F32 {
		if w.DType == tensor.F16 {
			r.F32[i] = tensor.F16ToF32(tensor.F32ToF16(v))
		} else {
			r.F32[i] = tensor.BF16ToF32(tensor.F32ToBF16(v))
		}
	}
	return r
}

func (b *Backend) Linear(y, x, w, bias *tensor.Tensor) error {
	return b.run("linear", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Linear(y, b.round16(in[0], w), w, bias)
	})
}

func (b *Backend) MatMul(y, a, c *tensor.Tensor) error {
	return b.run("matmul", y, []*tensor.Tensor{a, c}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.MatMul(y, in[0], in[1])
	})
}

func (b *Backend) Conv2D(y, x, w, bias *tensor.Tensor, p tensor.Conv2DParams) error {
	return b.run("conv2d", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Conv2D(y, b.round16(in[0], w), w, bias, p)
	})
}

func (b *Backend) GroupNorm(y, x, gamma, beta *tensor.Tensor, groups int, eps float32, silu bool) error {
	return b.run("group_norm", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.GroupNorm(y, in[0], gamma, beta, groups, eps, silu)
	})
}

func (b *Backend) LayerNorm(y, x, gamma, beta *tensor.Tensor, eps float32) error {
	return b.run("layer_norm", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.LayerNorm(y, in[0], gamma, beta, eps)
	})
}

func (b *Backend) Attention(y, q, k, v *tensor.Tensor, heads int, causal bool) error {
	return b.run("attention", y, []*tensor.Tensor{q, k, v}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Attention(y, in[0], in[1], in[2], heads, causal)
	})
}

func (b *Backend) Unary(y, x *tensor.Tensor, op tensor.Unary) error {
	return b.run("unary", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Unary(y, in[0], op)
	})
}

func (b *Backend) Add(y, a, c *tensor.Tensor) error {
	return b.run("add", y, []*tensor.Tensor{a, c}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Add(y, in[0], in[1])
	})
}

func (b *Backend) Mul(y, a, c *tensor.Tensor) error {
	return b.run("mul", y, []*tensor.Tensor{a, c}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Mul(y, in[0], in[1])
	})
}

func (b *Backend) Scale(y, x *tensor.Tensor, s, t float32) error {
	return b.run("scale", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Scale(y, in[0], s, t)
	})
}

func (b *Backend) AddChannel(y, x, c *tensor.Tensor) error {
	return b.run("add_channel", y, []*tensor.Tensor{x, c}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.AddChannel(y, in[0], in[1])
	})
}

func (b *Backend) GEGLU(y, x *tensor.Tensor) error {
	return b.run("geglu", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.GEGLU(y, in[0])
	})
}

func (b *Backend) Transpose(y, x *tensor.Tensor) error {
	return b.run("transpose", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Transpose(y, in[0])
	})
}

func (b *Backend) Concat(y, a, c *tensor.Tensor) error {
	return b.run("concat", y, []*tensor.Tensor{a, c}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Concat(y, in[0], in[1])
	})
}

func (b *Backend) Upsample2x(y, x *tensor.Tensor) error {
	return b.run("upsample2x", y, []*tensor.Tensor{x}, func(y *tensor.Tensor, in []*tensor.Tensor) error {
		return b.Host.Upsample2x(y, in[0])
	})
}

var _ tensor.DeviceBackend = (*Backend)(nil)
