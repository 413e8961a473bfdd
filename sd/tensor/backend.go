package tensor

import (
	"errors"
	"fmt"
)

// Unary selects an element-wise activation.
type Unary uint8

const (
	SiLU      Unary = iota // x * sigmoid(x)
	GELU                   // exact GELU: x/2 * (1 + erf(x/sqrt 2))
	QuickGELU              // x * sigmoid(1.702 x), as OpenAI CLIP
	ReLU                   // max(x, 0)
	Tanh                   // tanh(x)
)

func (u Unary) String() string {
	return [...]string{"silu", "gelu", "quick_gelu", "relu", "tanh"}[u]
}

// Conv2DParams describes a 2-D convolution. Padding is zero padding and may be
// asymmetric (the ldm VAE pads only bottom and right before stride-2 convs).
type Conv2DParams struct {
	Stride                               int
	PadTop, PadLeft, PadBottom, PadRight int
}

// Pad returns symmetric padding p with the given stride.
func Pad(stride, p int) Conv2DParams {
	return Conv2DParams{Stride: stride, PadTop: p, PadLeft: p, PadBottom: p, PadRight: p}
}

// OutSize returns the output height and width for an h x w input and a kh x kw kernel.
func (p Conv2DParams) OutSize(h, w, kh, kw int) (int, int) {
	return (h+p.PadTop+p.PadBottom-kh)/p.Stride + 1, (w+p.PadLeft+p.PadRight-kw)/p.Stride + 1
}

// Backend runs gosd's numeric kernels. Every method writes its result into a
// caller-allocated, contiguous F32 destination of the documented shape and
// returns an *OpError for a shape or dtype it cannot handle. Inputs named x,
// a, b, q, k, v are F32; weights (w, gamma, beta, bias) may be F32, F16 or
// BF16. A destination never aliases an input unless the method says so.
type Backend interface {
	// Name identifies the backend and the kernel family it chose ("cpu/avx512").
	Name() string

	// Linear: x [..., K] f32, w [N, K], b [N] or nil -> y [..., N].
	// y = x·wᵀ + b.
	Linear(y, x, w, b *Tensor) error

	// MatMul: a [M, K] f32, b [K, N] f32 -> y [M, N]. y = a·b.
	MatMul(y, a, b *Tensor) error

	// Conv2D: x [B, C, H, W] f32, w [O, C, kH, kW], b [O] or nil
	// -> y [B, O, Ho, Wo] with Ho, Wo from p.OutSize.
	Conv2D(y, x, w, b *Tensor, p Conv2DParams) error

	// GroupNorm: x [B, C, ...] f32, gamma and beta [C] -> y like x.
	// Normalises each of the G groups of C/G channels (all spatial positions)
	// to zero mean and unit variance (biased), then scales and shifts per
	// channel, then applies SiLU when silu is set. y may alias x.
	GroupNorm(y, x, gamma, beta *Tensor, groups int, eps float32, silu bool) error

	// LayerNorm: x [..., C] f32, gamma and beta [C] -> y like x, normalised
	// over the last dimension. y may alias x.
	LayerNorm(y, x, gamma, beta *Tensor, eps float32) error

	// Attention: q [B, Lq, H*D], k and v [B, Lk, H*D] f32 -> y [B, Lq, H*D].
	// For each batch and head: softmax(q·kᵀ/sqrt(D))·v. With causal set,
	// query i attends to keys 0..i only (requires Lq == Lk). Implementations
	// must not hold the full [H, Lq, Lk] score matrix at once.
	Attention(y, q, k, v *Tensor, heads int, causal bool) error

	// Unary: x f32 -> y like x, y = op(x). y may alias x.
	Unary(y, x *Tensor, op Unary) error

	// Add: a, b f32 of equal size -> y = a + b. y may alias a or b.
	Add(y, a, b *Tensor) error

	// Mul: a, b f32 of equal size -> y = a * b. y may alias a or b.
	Mul(y, a, b *Tensor) error

	// Scale: x f32 -> y = x*s + t. y may alias x.
	Scale(y, x *Tensor, s, t float32) error

	// AddChannel: x [B, C, ...] f32, c [B, C] f32 -> y[b, c, ...] = x[b, c, ...] + c[b, c].
	// y may alias x.
	AddChannel(y, x, c *Tensor) error

	// GEGLU: x [..., 2N] f32 -> y [..., N], y = x[..., :N] * GELU(x[..., N:]).
	GEGLU(y, x *Tensor) error

	// Transpose: x [B, M, N] f32 -> y [B, N, M].
	Transpose(y, x *Tensor) error

	// Concat: a [B, Ca, ...], b [B, Cb, ...] f32 with equal trailing dims
	// -> y [B, Ca+Cb, ...], concatenated along dimension 1.
	Concat(y, a, b *Tensor) error

	// Upsample2x: x [B, C, H, W] f32 -> y [B, C, OH, OW], nearest neighbour
	// 2x: y[.., i, j] = x[.., i/2, j/2], with OH 2H or 2H-1 and OW 2W or
	// 2W-1 (an odd size is the 2x map without its last row or column, which
	// is PyTorch's nearest resize to that size).
	Upsample2x(y, x *Tensor) error
}

// ErrShape and ErrDType classify OpErrors; test them with errors.Is.
var (
	ErrShape   = errors.New("shape mismatch")
	ErrDType   = errors.New("unsupported dtype")
	ErrBackend = errors.New("backend failure")
)

// OpError reports a kernel call that could not run.
type OpError struct {
	Op     string  // kernel name, e.g. "conv2d"
	Shapes [][]int // input shapes in argument order
	DType  DType   // dtype of the weight argument, if any
	Err    error   // ErrShape, ErrDType or ErrBackend, possibly wrapped
	Detail string  // human-readable detail
}

func (e *OpError) Error() string {
	s := e.Op + ":"
	for _, sh := range e.Shapes {
		s += " " + ShapeString(sh)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s + " (" + e.Err.Error() + ")"
}

func (e *OpError) Unwrap() error { return e.Err }

// ShapeError builds an *OpError of kind ErrShape for op.
func ShapeError(op, format string, args ...any) *OpError {
	return &OpError{Op: op, Err: ErrShape, Detail: fmt.Sprintf(format, args...)}
}

// Must panics with err when it is not nil. Model code uses it around backend
// calls whose shapes it has already validated; the model's entry point turns
// the panic back into an error with Recover.
func Must(err error) {
	if err != nil {
		panic(mustPanic{err})
	}
}

type mustPanic struct{ err error }

// Recover, deferred at a model entry point, converts a panic raised by Must
// into *errp. Other panics propagate.
func Recover(errp *error) {
	if r := recover(); r != nil {
		if m, ok := r.(mustPanic); ok {
			*errp = m.err
			return
		}
		panic(r)
	}
}
