// Package nn holds the layers the Stable Diffusion networks are built from
// (linear, convolution, normalisation, attention helpers) and a Loader that
// fills them from a tensor.Source with shape checks.
//
// Forward methods allocate their outputs with tensor.Empty (from the
// activation pool; model code hands intermediates back with
// tensor.Release) and report kernel failures by panicking through
// tensor.Must; every model entry point defers tensor.Recover so callers
// receive an error instead.
package nn

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
)

// Loader reads weights under a name prefix from a Source, checking shapes.
// It records the first error and every name it used; check Err once after
// building a model.
type Loader struct {
	src    tensor.Source
	prefix string
	state  *loaderState
}

type loaderState struct {
	err  error
	used map[string]bool
}

// NewLoader returns a Loader rooted at prefix (e.g. "model.diffusion_model.").
func NewLoader(src tensor.Source, prefix string) *Loader {
	return &Loader{src: src, prefix: prefix, state: &loaderState{used: map[string]bool{}}}
}

// Sub returns a Loader for prefix+name+"." sharing this one's error and usage record.
func (l *Loader) Sub(name string) *Loader {
	return &Loader{src: l.src, prefix: l.prefix + name + ".", state: l.state}
}

// Subf is Sub with a formatted name.
func (l *Loader) Subf(format string, args ...any) *Loader { return l.Sub(fmt.Sprintf(format, args...)) }

// Err is the first error met while loading, if any.
func (l *Loader) Err() error { return l.state.err }

// Used reports whether the full tensor name was read by this loader tree.
func (l *Loader) Used(name string) bool { return l.state.used[name] }

// Unused lists names under prefix in the source that no layer read.
func (l *Loader) Unused(prefix string) []string {
	var out []string
	for _, n := range l.src.Names() {
		if strings.HasPrefix(n, prefix) && !l.state.used[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func (l *Loader) fail(err error) {
	if l.state.err == nil {
		l.state.err = err
	}
}

// Has reports whether prefix+name exists in the source.
func (l *Loader) Has(name string) bool {
	_, ok := l.src.Get(l.prefix + name)
	return ok
}

// Tensor fetches prefix+name and checks its shape against want (dimensions of
// -1 match anything). A missing or misshapen tensor records an error and
// returns a zero F32 tensor of a plausible shape so building can go on.
func (l *Loader) Tensor(name string, want ...int) *tensor.Tensor {
	full := l.prefix + name
	t, ok := l.src.Get(full)
	if !ok {
		l.fail(fmt.Errorf("checkpoint has no tensor %q", full))
		return placeholder(want)
	}
	l.state.used[full] = true
	if len(t.Shape) != len(want) {
		l.fail(fmt.Errorf("tensor %q has shape %s, want %s", full, tensor.ShapeString(t.Shape), tensor.ShapeString(want)))
		return placeholder(want)
	}
	for i, d := range want {
		if d >= 0 && t.Shape[i] != d {
			l.fail(fmt.Errorf("tensor %q has shape %s, want %s", full, tensor.ShapeString(t.Shape), tensor.ShapeString(want)))
			return placeholder(want)
		}
	}
	return t
}

// Optional is Tensor for a weight that may be absent (returns nil then).
func (l *Loader) Optional(name string, want ...int) *tensor.Tensor {
	if !l.Has(name) {
		return nil
	}
	return l.Tensor(name, want...)
}

func placeholder(want []int) *tensor.Tensor {
	s := make([]int, len(want))
	for i, d := range want {
		s[i] = max(d, 1)
	}
	return tensor.New(s...)
}

// Linear is y = x·Wᵀ + b with W [Out, In].
type Linear struct {
	Weight, Bias *tensor.Tensor
}

// LoadLinear reads name.weight [out, in] and, if bias, name.bias [out].
func (l *Loader) Linear(name string, in, out int, bias bool) *Linear {
	m := &Linear{Weight: l.Tensor(name+".weight", out, in)}
	if bias {
		m.Bias = l.Tensor(name+".bias", out)
	}
	return m
}

// Out is the output width.
func (m *Linear) Out() int { return m.Weight.Shape[0] }

// Forward: x [..., In] -> [..., Out].
func (m *Linear) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	shape := append(append([]int(nil), x.Shape[:len(x.Shape)-1]...), m.Out())
	y := tensor.EmptyOn(be, shape...)
	tensor.Must(be.Linear(y, x, m.Weight, m.Bias))
	return y
}

// Conv2D is a 2-D convolution with weight [Out, In, kH, kW].
type Conv2D struct {
	Weight, Bias *tensor.Tensor
	Params       tensor.Conv2DParams
}

// Conv2D reads name.weight [out, in, k, k] and, if bias, name.bias [out]; the
// convolution uses the given stride and symmetric padding.
func (l *Loader) Conv2D(name string, in, out, k, stride, pad int, bias bool) *Conv2D {
	c := &Conv2D{Weight: l.Tensor(name+".weight", out, in, k, k), Params: tensor.Pad(stride, pad)}
	if bias {
		c.Bias = l.Tensor(name+".bias", out)
	}
	return c
}

// Forward: x [B, In, H, W] -> [B, Out, Ho, Wo].
func (c *Conv2D) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	ho, wo := c.Params.OutSize(x.Shape[2], x.Shape[3], c.Weight.Shape[2], c.Weight.Shape[3])
	y := tensor.EmptyOn(be, x.Shape[0], c.Weight.Shape[0], ho, wo)
	tensor.Must(be.Conv2D(y, x, c.Weight, c.Bias, c.Params))
	return y
}

// ForwardRelease is Forward followed by tensor.Release(x): for an input
// nothing else reads.
func (c *Conv2D) ForwardRelease(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	y := c.Forward(be, x)
	tensor.Release(x)
	return y
}

// AddShortcut adds the residual shortcut to h in place and returns h: x
// itself, or conv(x) when conv is set (a width change).
func AddShortcut(be tensor.Backend, h, x *tensor.Tensor, conv *Conv2D) *tensor.Tensor {
	if conv == nil {
		return AddInPlace(be, h, x)
	}
	s := conv.Forward(be, x)
	AddInPlace(be, h, s)
	tensor.Release(s)
	return h
}

// GroupNorm normalises groups of channels, optionally followed by SiLU.
type GroupNorm struct {
	Weight, Bias *tensor.Tensor
	Groups       int
	Eps          float32
}

// GroupNorm reads name.weight and name.bias [c].
func (l *Loader) GroupNorm(name string, c, groups int, eps float32) *GroupNorm {
	return &GroupNorm{Weight: l.Tensor(name+".weight", c), Bias: l.Tensor(name+".bias", c), Groups: groups, Eps: eps}
}

// Forward: x [B, C, ...] -> same shape; silu fuses a SiLU after the norm.
func (g *GroupNorm) Forward(be tensor.Backend, x *tensor.Tensor, silu bool) *tensor.Tensor {
	y := tensor.EmptyOn(be, x.Shape...)
	tensor.Must(be.GroupNorm(y, x, g.Weight, g.Bias, g.Groups, g.Eps, silu))
	return y
}

// ForwardInPlace normalises x in place (then SiLU when silu is set) and
// returns it.
func (g *GroupNorm) ForwardInPlace(be tensor.Backend, x *tensor.Tensor, silu bool) *tensor.Tensor {
	tensor.Must(be.GroupNorm(x, x, g.Weight, g.Bias, g.Groups, g.Eps, silu))
	return x
}

// LayerNorm normalises the last dimension.
type LayerNorm struct {
	Weight, Bias *tensor.Tensor
	Eps          float32
}

// LayerNorm reads name.weight and name.bias [c].
func (l *Loader) LayerNorm(name string, c int, eps float32) *LayerNorm {
	return &LayerNorm{Weight: l.Tensor(name+".weight", c), Bias: l.Tensor(name+".bias", c), Eps: eps}
}

// Forward: x [..., C] -> same shape.
func (n *LayerNorm) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	y := tensor.EmptyOn(be, x.Shape...)
	tensor.Must(be.LayerNorm(y, x, n.Weight, n.Bias, n.Eps))
	return y
}

// Act applies an element-wise activation into a new tensor.
func Act(be tensor.Backend, x *tensor.Tensor, op tensor.Unary) *tensor.Tensor {
	y := tensor.EmptyOn(be, x.Shape...)
	tensor.Must(be.Unary(y, x, op))
	return y
}

// Add returns a + b.
func Add(be tensor.Backend, a, b *tensor.Tensor) *tensor.Tensor {
	y := tensor.EmptyOn(be, a.Shape...)
	tensor.Must(be.Add(y, a, b))
	return y
}

// AddInPlace sets a = a + b and returns a.
func AddInPlace(be tensor.Backend, a, b *tensor.Tensor) *tensor.Tensor {
	tensor.Must(be.Add(a, a, b))
	return a
}

// Scale returns x*s + t.
func Scale(be tensor.Backend, x *tensor.Tensor, s, t float32) *tensor.Tensor {
	y := tensor.EmptyOn(be, x.Shape...)
	tensor.Must(be.Scale(y, x, s, t))
	return y
}

// Attention returns softmax(q·kᵀ/sqrt(D))·v over heads; q [B, Lq, H*D], k and v [B, Lk, H*D].
func Attention(be tensor.Backend, q, k, v *tensor.Tensor, heads int, causal bool) *tensor.Tensor {
	y := tensor.EmptyOn(be, q.Shape...)
	tensor.Must(be.Attention(y, q, k, v, heads, causal))
	return y
}

// Transpose swaps the last two dimensions of x [B, M, N] -> [B, N, M].
func Transpose(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	y := tensor.EmptyOn(be, x.Shape[0], x.Shape[2], x.Shape[1])
	tensor.Must(be.Transpose(y, x))
	return y
}

// Concat joins a [B, Ca, ...] and b [B, Cb, ...] along dimension 1.
func Concat(be tensor.Backend, a, b *tensor.Tensor) *tensor.Tensor {
	shape := append([]int(nil), a.Shape...)
	shape[1] += b.Shape[1]
	y := tensor.EmptyOn(be, shape...)
	tensor.Must(be.Concat(y, a, b))
	return y
}

// Upsample2x is nearest-neighbour upsampling [B, C, H, W] -> [B, C, 2H, 2W].
func Upsample2x(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	y := tensor.EmptyOn(be, x.Shape[0], x.Shape[1], 2*x.Shape[2], 2*x.Shape[3])
	tensor.Must(be.Upsample2x(y, x))
	return y
}

// GEGLU returns x[..., :N] * GELU(x[..., N:]) for x [..., 2N].
func GEGLU(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	shape := append([]int(nil), x.Shape...)
	shape[len(shape)-1] /= 2
	y := tensor.EmptyOn(be, shape...)
	tensor.Must(be.GEGLU(y, x))
	return y
}

// AddChannel returns x [B, C, ...] + c [B, C] broadcast over the trailing dims.
func AddChannel(be tensor.Backend, x, c *tensor.Tensor) *tensor.Tensor {
	y := tensor.EmptyOn(be, x.Shape...)
	tensor.Must(be.AddChannel(y, x, c))
	return y
}

// Weights returns every tensor reachable from m (a model: pointers,
// structs, slices, arrays and maps of them) through exported or unexported
// fields, each once, in the order met. The pipeline uses it to release a
// network's packed weights when its phase of a generation ends.
func Weights(m any) []*tensor.Tensor {
	var out []*tensor.Tensor
	seen := map[uintptr]bool{}
	tt := reflect.TypeOf((*tensor.Tensor)(nil))
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			if v.Type() == tt {
				out = append(out, (*tensor.Tensor)(v.UnsafePointer()))
				return
			}
			walk(v.Elem())
		case reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				walk(v.Field(i))
			}
		case reflect.Slice, reflect.Array:
			if v.Kind() == reflect.Slice && v.IsNil() {
				return
			}
			if k := v.Type().Elem().Kind(); k != reflect.Pointer && k != reflect.Struct &&
				k != reflect.Interface && k != reflect.Slice && k != reflect.Array && k != reflect.Map {
				return // plain data ([]int, []float32, ...)
			}
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		case reflect.Map:
			it := v.MapRange()
			for it.Next() {
				walk(it.Value())
			}
		}
	}
	walk(reflect.ValueOf(m))
	return out
}
