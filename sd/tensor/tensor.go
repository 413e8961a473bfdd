// Package tensor holds gosd's dense arrays, their element types, and the Backend
// interface through which the models run their numeric kernels.
//
// Layout: every tensor is dense and row-major (C order). Shapes are written
// outermost first, in PyTorch's logical order: [B, C, H, W] for images and
// feature maps, [B, L, C] for token sequences, [O, I, kH, kW] for convolution
// weights and [N, K] (out, in) for linear weights.
//
// Activations are always F32. Weights keep the dtype they were stored with
// (F32, F16 or BF16); kernels convert them while packing.
package tensor

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// DType is the element type of a tensor.
type DType uint8

const (
	F32  DType = iota // IEEE binary32
	F16               // IEEE binary16, stored as uint16 bits
	BF16              // bfloat16, stored as uint16 bits
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	if d == F32 {
		return 4
	}
	return 2
}

// Tensor is a dense row-major array. Exactly one of F32, Half and Dev holds
// the elements: F32 when DType is F32, Half (raw 16-bit patterns) when DType
// is F16 or BF16, Dev when a DeviceBackend allocated the tensor in its own
// memory (then F32 and Half are nil; see OnDevice). The slices may alias
// memory-mapped files; treat weights as read-only.
type Tensor struct {
	Shape []int
	DType DType
	F32   []float32
	Half  []uint16
	Dev   Storage
}

// New returns a zero-filled F32 tensor of the given shape.
func New(shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), DType: F32, F32: make([]float32, Numel(shape))}
}

// FromF32 wraps data (not copied) as an F32 tensor. It panics if the length
// does not match the shape, which is a programming error.
func FromF32(data []float32, shape ...int) *Tensor {
	if len(data) != Numel(shape) {
		panic(fmt.Sprintf("tensor.FromF32: %d values for shape %v", len(data), shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: F32, F32: data}
}

// FromHalf wraps 16-bit data (not copied) as an F16 or BF16 tensor.
func FromHalf(data []uint16, dt DType, shape ...int) *Tensor {
	if dt != F16 && dt != BF16 {
		panic("tensor.FromHalf: dtype " + dt.String())
	}
	if len(data) != Numel(shape) {
		panic(fmt.Sprintf("tensor.FromHalf: %d values for shape %v", len(data), shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: dt, Half: data}
}

// Numel is the product of the dimensions (1 for a scalar shape).
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Numel is the number of elements.
func (t *Tensor) Numel() int { return Numel(t.Shape) }

// Dim returns dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// Reshape returns a tensor sharing t's data with a new shape of the same size.
// One dimension may be -1 and is inferred.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	s := append([]int(nil), shape...)
	infer, known := -1, 1
	for i, d := range s {
		if d == -1 {
			infer = i
		} else {
			known *= d
		}
	}
	if infer >= 0 && known > 0 {
		s[infer] = t.Numel() / known
	}
	if Numel(s) != t.Numel() {
		panic(fmt.Sprintf("tensor.Reshape: %v to %v", t.Shape, shape))
	}
	return &Tensor{Shape: s, DType: t.DType, F32: t.F32, Half: t.Half, Dev: t.Dev}
}

// Float32s returns the elements converted to float32 (a copy for F16/BF16
// and for a device tensor, the backing slice itself for F32). It panics when
// a device tensor cannot be copied back, a device failure that Download
// reports as an error instead.
func (t *Tensor) Float32s() []float32 {
	if t.Dev != nil {
		out := make([]float32, t.Numel())
		if err := t.Dev.Owner().ToHost(out, t); err != nil {
			panic("tensor.Float32s: " + err.Error())
		}
		return out
	}
	switch t.DType {
	case F32:
		return t.F32
	case F16:
		out := make([]float32, len(t.Half))
		for i, h := range t.Half {
			out[i] = F16ToF32(h)
		}
		return out
	case BF16:
		out := make([]float32, len(t.Half))
		for i, h := range t.Half {
			out[i] = BF16ToF32(h)
		}
		return out
	}
	panic("tensor: bad dtype")
}

// ToF32 returns t as an F32 tensor (t itself when it already is one).
func (t *Tensor) ToF32() *Tensor {
	if t.DType == F32 {
		return t
	}
	return FromF32(t.Float32s(), t.Shape...)
}

// Clone returns a deep copy, on the host for a device tensor.
func (t *Tensor) Clone() *Tensor {
	if t.Dev != nil {
		return FromF32(t.Float32s(), t.Shape...)
	}
	c := &Tensor{Shape: append([]int(nil), t.Shape...), DType: t.DType}
	if t.F32 != nil {
		c.F32 = append([]float32(nil), t.F32...)
	}
	if t.Half != nil {
		c.Half = append([]uint16(nil), t.Half...)
	}
	return c
}

// SameShape reports whether a and b have identical shapes.
func SameShape(a, b []int) bool { return slices.Equal(a, b) }

// ShapeString formats a shape as "[2 4 64 64]".
func ShapeString(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func (t *Tensor) String() string {
	return fmt.Sprintf("tensor(%s %s)", t.DType, ShapeString(t.Shape))
}

// F16ToF32 converts IEEE half bits to float32, exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: value = mant * 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// F32ToF16 converts float32 to IEEE half bits, rounding to nearest even.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff { // inf or nan
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - e)
		half := mant >> shift
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is correct
	}
	return sign | uint16(half)
}

// BF16ToF32 converts bfloat16 bits to float32, exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts float32 to bfloat16 bits, rounding to nearest even.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // nan
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}
