package tensor

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Profile is a Backend that forwards every call to another backend and
// records, per kind of call, how many calls ran, their wall time and their
// floating-point operations (multiply and add counted apart), so that a
// benchmark can say where a model's time goes and at what rate each kind of
// kernel runs. It is safe for concurrent use.
type Profile struct {
	Backend
	mu    sync.Mutex
	stats map[string]*OpStat
	total time.Duration
}

// OpStat is one row of a Profile: Kind names the op and its shape class
// ("conv2d 3x3", "attention self", "linear", ...).
type OpStat struct {
	Kind  string
	Calls int
	Time  time.Duration
	Flops float64
}

// GFLOPS is the op's rate in 1e9 floating-point operations per second of
// its wall time (0 for ops without a flop count).
func (s OpStat) GFLOPS() float64 {
	if s.Time <= 0 {
		return 0
	}
	return s.Flops / s.Time.Seconds() / 1e9
}

// NewProfile wraps be.
func NewProfile(be Backend) *Profile { return &Profile{Backend: be, stats: map[string]*OpStat{}} }

// Unwrap returns the backend p forwards to.
func (p *Profile) Unwrap() Backend { return p.Backend }

// Reset forgets everything recorded.
func (p *Profile) Reset() {
	p.mu.Lock()
	p.stats, p.total = map[string]*OpStat{}, 0
	p.mu.Unlock()
}

// Total is the wall time spent in calls since the last Reset.
func (p *Profile) Total() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// Stats returns the rows, longest total time first.
func (p *Profile) Stats() []OpStat {
	p.mu.Lock()
	out := make([]OpStat, 0, len(p.stats))
	for _, s := range p.stats {
		out = append(out, *s)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Time != out[j].Time {
			return out[i].Time > out[j].Time
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

func (p *Profile) record(kind string, flops float64, start time.Time) {
	d := time.Since(start)
	p.mu.Lock()
	s := p.stats[kind]
	if s == nil {
		s = &OpStat{Kind: kind}
		p.stats[kind] = s
	}
	s.Calls++
	s.Time += d
	s.Flops += flops
	p.total += d
	p.mu.Unlock()
}

func (p *Profile) Linear(y, x, w, b *Tensor) error {
	t := time.Now()
	err := p.Backend.Linear(y, x, w, b)
	if err == nil {
		p.record("linear", 2*float64(x.Numel())*float64(w.Shape[0]), t)
	}
	return err
}

func (p *Profile) MatMul(y, a, b *Tensor) error {
	t := time.Now()
	err := p.Backend.MatMul(y, a, b)
	if err == nil {
		p.record("matmul", 2*float64(a.Numel())*float64(b.Shape[1]), t)
	}
	return err
}

func (p *Profile) Conv2D(y, x, w, b *Tensor, cp Conv2DParams) error {
	t := time.Now()
	err := p.Backend.Conv2D(y, x, w, b, cp)
	if err == nil {
		kind := fmt.Sprintf("conv2d %dx%d", w.Shape[2], w.Shape[3])
		if cp.Stride != 1 {
			kind += fmt.Sprintf("/%d", cp.Stride)
		}
		p.record(kind, 2*float64(y.Numel())*float64(Numel(w.Shape[1:])), t)
	}
	return err
}

func (p *Profile) GroupNorm(y, x, gamma, beta *Tensor, groups int, eps float32, silu bool) error {
	t := time.Now()
	err := p.Backend.GroupNorm(y, x, gamma, beta, groups, eps, silu)
	if err == nil {
		kind := "group_norm"
		if silu {
			kind += "+silu"
		}
		p.record(kind, 0, t)
	}
	return err
}

func (p *Profile) LayerNorm(y, x, gamma, beta *Tensor, eps float32) error {
	return p.timed("layer_norm", func() error { return p.Backend.LayerNorm(y, x, gamma, beta, eps) })
}

func (p *Profile) Attention(y, q, k, v *Tensor, heads int, causal bool) error {
	t := time.Now()
	err := p.Backend.Attention(y, q, k, v, heads, causal)
	if err == nil {
		kind := "attention self"
		if k.Shape[1] != q.Shape[1] {
			kind = "attention cross"
		}
		// q·kᵀ and p·v: 2 products of Lq x Lk x D per batch and head.
		p.record(kind, 4*float64(q.Numel())*float64(k.Shape[1]), t)
	}
	return err
}

func (p *Profile) timed(kind string, f func() error) error {
	t := time.Now()
	err := f()
	if err == nil {
		p.record(kind, 0, t)
	}
	return err
}

func (p *Profile) Unary(y, x *Tensor, op Unary) error {
	return p.timed("unary "+op.String(), func() error { return p.Backend.Unary(y, x, op) })
}

func (p *Profile) Add(y, a, b *Tensor) error {
	return p.timed("add", func() error { return p.Backend.Add(y, a, b) })
}

func (p *Profile) Mul(y, a, b *Tensor) error {
	return p.timed("mul", func() error { return p.Backend.Mul(y, a, b) })
}

func (p *Profile) Scale(y, x *Tensor, s, t float32) error {
	return p.timed("scale", func() error { return p.Backend.Scale(y, x, s, t) })
}

func (p *Profile) AddChannel(y, x, c *Tensor) error {
	return p.timed("add_channel", func() error { return p.Backend.AddChannel(y, x, c) })
}

func (p *Profile) GEGLU(y, x *Tensor) error {
	return p.timed("geglu", func() error { return p.Backend.GEGLU(y, x) })
}

func (p *Profile) Transpose(y, x *Tensor) error {
	return p.timed("transpose", func() error { return p.Backend.Transpose(y, x) })
}

func (p *Profile) Concat(y, a, b *Tensor) error {
	return p.timed("concat", func() error { return p.Backend.Concat(y, a, b) })
}

func (p *Profile) Upsample2x(y, x *Tensor) error {
	return p.timed("upsample2x", func() error { return p.Backend.Upsample2x(y, x) })
}
