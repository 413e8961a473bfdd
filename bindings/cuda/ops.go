//go:build cuda

package cuda

/*
#include <stdint.h>
#include "gosd_cuda.h"
*/
import "C"

import "fmt"

func (p Ptr) f32() *C.float    { return (*C.float)(p.v()) }
func (p Ptr) u16() *C.uint16_t { return (*C.uint16_t)(p.v()) }

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Cast converts n elements of x (type from) into y (type to).
func (s *Stream) Cast(y, x Ptr, n int, from, to DType) error {
	var m msgBuf
	p, l := m.c()
	nn := C.size_t(n)
	var rc C.int
	switch {
	case from == F32 && to == F16:
		rc = C.sd_cuda_cast_f32_f16(x.f32(), y.u16(), nn, s.s, p, l)
	case from == F16 && to == F32:
		rc = C.sd_cuda_cast_f16_f32(x.u16(), y.f32(), nn, s.s, p, l)
	case from == F32 && to == BF16:
		rc = C.sd_cuda_cast_f32_bf16(x.f32(), y.u16(), nn, s.s, p, l)
	case from == BF16 && to == F32:
		rc = C.sd_cuda_cast_bf16_f32(x.u16(), y.f32(), nn, s.s, p, l)
	case from == F16 && to == BF16:
		rc = C.sd_cuda_cast_f16_bf16(x.u16(), y.u16(), nn, s.s, p, l)
	case from == BF16 && to == F16:
		rc = C.sd_cuda_cast_bf16_f16(x.u16(), y.u16(), nn, s.s, p, l)
	default:
		return &Error{Op: "cast", Status: StatusInvalid, Msg: fmt.Sprintf("no cast from dtype %d to %d", from, to)}
	}
	return m.err("cast", rc)
}

// AttentionMaxD is the widest head the f16/bf16 attention kernels take.
func AttentionMaxD() int { return int(C.sd_cuda_attention_max_d()) }

// Attention: q [b, lq, heads*d], k and v [b, lk, heads*d] of type dt -> y like q.
func (s *Stream) Attention(dt DType, y, q, k, v Ptr, b, lq, lk, heads, d int, causal bool) error {
	var m msgBuf
	p, l := m.c()
	var rc C.int
	switch dt {
	case F16:
		rc = C.sd_cuda_attention_f16(q.u16(), k.u16(), v.u16(), y.u16(), C.int(b), C.int(lq), C.int(lk),
			C.int(heads), C.int(d), cbool(causal), s.s, p, l)
	case BF16:
		rc = C.sd_cuda_attention_bf16(q.u16(), k.u16(), v.u16(), y.u16(), C.int(b), C.int(lq), C.int(lk),
			C.int(heads), C.int(d), cbool(causal), s.s, p, l)
	default:
		rc = C.sd_cuda_attention_f32(q.f32(), k.f32(), v.f32(), y.f32(), C.int(b), C.int(lq), C.int(lk),
			C.int(heads), C.int(d), cbool(causal), s.s, p, l)
	}
	return m.err("attention", rc)
}

// ConvShape holds the sizes of a convolution: x [B, C, H, W], w [O, C, KH, KW].
type ConvShape struct {
	B, C, H, W, O, KH, KW                int
	Stride                               int
	PadTop, PadLeft, PadBottom, PadRight int
}

// Conv2D: x [B, C, H, W] f32, w [O, C, KH, KW] of type wdt, bias [O] of type
// biasDT or the zero Ptr -> y [B, O, Ho, Wo] f32.
func (s *Stream) Conv2D(wdt DType, y, x, w, bias Ptr, biasDT DType, sh ConvShape) error {
	var m msgBuf
	p, l := m.c()
	b, c, h, wd, o := C.int(sh.B), C.int(sh.C), C.int(sh.H), C.int(sh.W), C.int(sh.O)
	kh, kw, st := C.int(sh.KH), C.int(sh.KW), C.int(sh.Stride)
	pt, pl, pb, pr := C.int(sh.PadTop), C.int(sh.PadLeft), C.int(sh.PadBottom), C.int(sh.PadRight)
	var rc C.int
	switch wdt {
	case F16:
		rc = C.sd_cuda_conv2d_f16(x.f32(), w.u16(), bias.v(), C.int(biasDT), y.f32(), b, c, h, wd, o, kh, kw,
			st, pt, pl, pb, pr, s.s, p, l)
	case BF16:
		rc = C.sd_cuda_conv2d_bf16(x.f32(), w.u16(), bias.v(), C.int(biasDT), y.f32(), b, c, h, wd, o, kh, kw,
			st, pt, pl, pb, pr, s.s, p, l)
	default:
		rc = C.sd_cuda_conv2d_f32(x.f32(), w.f32(), bias.v(), C.int(biasDT), y.f32(), b, c, h, wd, o, kh, kw,
			st, pt, pl, pb, pr, s.s, p, l)
	}
	return m.err("conv2d", rc)
}

// Linear: x [rows, k] f32, w [n, k] of type wdt, bias [n] (biasDT) or the zero
// Ptr -> y [rows, n] f32. For 16-bit weights xScratch must hold rows*k
// 16-bit elements.
func (bl *Blas) Linear(s *Stream, wdt DType, y, x, w, bias Ptr, biasDT DType, xScratch Ptr, rows, n, k int) error {
	var m msgBuf
	p, l := m.c()
	var rc C.int
	switch wdt {
	case F16:
		rc = C.sd_cuda_linear_f16(bl.h, x.f32(), w.u16(), bias.v(), C.int(biasDT), y.f32(), xScratch.u16(),
			C.int(rows), C.int(n), C.int(k), s.s, p, l)
	case BF16:
		rc = C.sd_cuda_linear_bf16(bl.h, x.f32(), w.u16(), bias.v(), C.int(biasDT), y.f32(), xScratch.u16(),
			C.int(rows), C.int(n), C.int(k), s.s, p, l)
	default:
		rc = C.sd_cuda_linear_f32(bl.h, x.f32(), w.f32(), bias.v(), C.int(biasDT), y.f32(),
			C.int(rows), C.int(n), C.int(k), s.s, p, l)
	}
	return m.err("linear", rc)
}

// MatMul: a [rows, k] f32, b [k, n] f32 -> y [rows, n] f32.
func (bl *Blas) MatMul(s *Stream, y, a, b Ptr, rows, k, n int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("matmul", C.sd_cuda_matmul_f32(bl.h, a.f32(), b.f32(), y.f32(), C.int(rows), C.int(k), C.int(n),
		s.s, p, l))
}

// GroupNorm: x [b, c, hw] f32, gamma (gdt) and beta (bdt) [c] -> y like x.
func (s *Stream) GroupNorm(y, x, gamma Ptr, gdt DType, beta Ptr, bdt DType, b, c, hw, groups int, eps float32,
	silu bool) error {
	var m msgBuf
	p, l := m.c()
	return m.err("group_norm", C.sd_cuda_group_norm_f32(x.f32(), gamma.v(), C.int(gdt), beta.v(), C.int(bdt),
		y.f32(), C.int(b), C.int(c), C.int(hw), C.int(groups), C.float(eps), cbool(silu), s.s, p, l))
}

// LayerNorm: x [rows, c] f32, gamma (gdt) and beta (bdt) [c] -> y like x.
func (s *Stream) LayerNorm(y, x, gamma Ptr, gdt DType, beta Ptr, bdt DType, rows, c int, eps float32) error {
	var m msgBuf
	p, l := m.c()
	return m.err("layer_norm", C.sd_cuda_layer_norm_f32(x.f32(), gamma.v(), C.int(gdt), beta.v(), C.int(bdt),
		y.f32(), C.int(rows), C.int(c), C.float(eps), s.s, p, l))
}

// Unary: y[i] = op(x[i]) for n elements; op takes tensor.Unary values.
func (s *Stream) Unary(y, x Ptr, n, op int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("unary", C.sd_cuda_unary_f32(x.f32(), y.f32(), C.size_t(n), C.int(op), s.s, p, l))
}

// Add: y = a + b over n elements.
func (s *Stream) Add(y, a, b Ptr, n int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("add", C.sd_cuda_add_f32(a.f32(), b.f32(), y.f32(), C.size_t(n), s.s, p, l))
}

// Mul: y = a * b over n elements.
func (s *Stream) Mul(y, a, b Ptr, n int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("mul", C.sd_cuda_mul_f32(a.f32(), b.f32(), y.f32(), C.size_t(n), s.s, p, l))
}

// Scale: y = x*sc + t over n elements.
func (s *Stream) Scale(y, x Ptr, n int, sc, t float32) error {
	var m msgBuf
	p, l := m.c()
	return m.err("scale", C.sd_cuda_scale_f32(x.f32(), y.f32(), C.size_t(n), C.float(sc), C.float(t), s.s, p, l))
}

// AddChannel: x [bc, hw], c [bc] -> y[i, j] = x[i, j] + c[i].
func (s *Stream) AddChannel(y, x, c Ptr, bc, hw int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("add_channel", C.sd_cuda_add_channel_f32(x.f32(), c.f32(), y.f32(), C.size_t(bc), C.size_t(hw),
		s.s, p, l))
}

// GEGLU: x [rows, 2n] -> y [rows, n].
func (s *Stream) GEGLU(y, x Ptr, rows, n int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("geglu", C.sd_cuda_geglu_f32(x.f32(), y.f32(), C.size_t(rows), C.size_t(n), s.s, p, l))
}

// Transpose: x [b, rows, cols] -> y [b, cols, rows].
func (s *Stream) Transpose(y, x Ptr, b, rows, cols int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("transpose", C.sd_cuda_transpose_f32(x.f32(), y.f32(), C.int(b), C.int(rows), C.int(cols),
		s.s, p, l))
}

// Concat: a [b, na], bb [b, nb] -> y [b, na+nb].
func (s *Stream) Concat(y, a, bb Ptr, b, na, nb int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("concat", C.sd_cuda_concat_f32(a.f32(), bb.f32(), y.f32(), C.size_t(b), C.size_t(na),
		C.size_t(nb), s.s, p, l))
}

// Upsample2x: x [bc, h, w] -> y [bc, oh, ow], nearest neighbour 2x with oh
// 2h or 2h-1 and ow 2w or 2w-1.
func (s *Stream) Upsample2x(y, x Ptr, bc, h, w, oh, ow int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("upsample2x", C.sd_cuda_upsample2x_f32(x.f32(), y.f32(), C.size_t(bc), C.int(h), C.int(w),
		C.int(oh), C.int(ow), s.s, p, l))
}
