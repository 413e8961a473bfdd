package tensor

import (
	"math"
	"runtime"
	"sync"
)

// Ref is the slow, obviously-correct pure-Go backend. It accumulates in
// float64 and exists to check the native kernels and the model code; it is
// far too slow for full-size models.
type Ref struct{}

// NewRef returns the reference backend.
func NewRef() *Ref { return &Ref{} }

func (*Ref) Name() string { return "ref" }

// parallel runs f(i) for i in [0, n) on all cores.
func parallel(n int, f func(i int)) {
	w := runtime.GOMAXPROCS(0)
	if w > n {
		w = n
	}
	if w <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for g := 0; g < w; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

func checkF32(op string, ts ...*Tensor) error {
	for _, t := range ts {
		if t == nil || t.DType != F32 || t.Dev == nil && len(t.F32) != t.Numel() || t.Dev != nil && t.F32 != nil {
			return &OpError{Op: op, Err: ErrDType, Detail: "activations must be f32"}
		}
	}
	return nil
}

func shapes(ts ...*Tensor) [][]int {
	var s [][]int
	for _, t := range ts {
		if t != nil {
			s = append(s, t.Shape)
		}
	}
	return s
}

func bad(op string, ts []*Tensor, format string, args ...any) error {
	e := ShapeError(op, format, args...)
	e.Shapes = shapes(ts...)
	return e
}

func (*Ref) Linear(y, x, w, b *Tensor) error {
	if err := onHost("linear", y, x, w, b); err != nil {
		return err
	}
	if err := checkF32("linear", y, x); err != nil {
		return err
	}
	if len(w.Shape) != 2 || w.Shape[0] < 1 || w.Shape[1] < 1 || x.Dim(-1) != w.Shape[1] || y.Dim(-1) != w.Shape[0] ||
		x.Numel()/w.Shape[1] != y.Numel()/w.Shape[0] || (b != nil && b.Numel() != w.Shape[0]) {
		return bad("linear", []*Tensor{x, w, b, y}, "want x [..., K], w [N, K], b [N], y [..., N]")
	}
	n, k := w.Shape[0], w.Shape[1]
	m := x.Numel() / k
	wf := w.Float32s()
	var bf []float32
	if b != nil {
		bf = b.Float32s()
	}
	parallel(m, func(i int) {
		xr := x.F32[i*k : (i+1)*k]
		for j := 0; j < n; j++ {
			wr := wf[j*k : (j+1)*k]
			var s float64
			for p := range xr {
				s += float64(xr[p]) * float64(wr[p])
			}
			if bf != nil {
				s += float64(bf[j])
			}
			y.F32[i*n+j] = float32(s)
		}
	})
	return nil
}

func (*Ref) MatMul(y, a, b *Tensor) error {
	if err := onHost("matmul", y, a, b); err != nil {
		return err
	}
	if err := checkF32("matmul", y, a, b); err != nil {
		return err
	}
	if len(a.Shape) != 2 || len(b.Shape) != 2 || len(y.Shape) != 2 || a.Shape[1] != b.Shape[0] ||
		y.Shape[0] != a.Shape[0] || y.Shape[1] != b.Shape[1] {
		return bad("matmul", []*Tensor{a, b, y}, "want a [M, K], b [K, N], y [M, N]")
	}
	m, k, n := a.Shape[0], a.Shape[1], b.Shape[1]
	parallel(m, func(i int) {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += float64(a.F32[i*k+p]) * float64(b.F32[p*n+j])
			}
			y.F32[i*n+j] = float32(s)
		}
	})
	return nil
}

func (*Ref) Conv2D(y, x, w, b *Tensor, p Conv2DParams) error {
	if err := onHost("conv2d", y, x, w, b); err != nil {
		return err
	}
	if err := checkF32("conv2d", y, x); err != nil {
		return err
	}
	ts := []*Tensor{x, w, b, y}
	if len(x.Shape) != 4 || len(w.Shape) != 4 || len(y.Shape) != 4 || w.Shape[1] != x.Shape[1] || p.Stride < 1 {
		return bad("conv2d", ts, "want x [B, C, H, W], w [O, C, kH, kW]")
	}
	bs, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	o, kh, kw := w.Shape[0], w.Shape[2], w.Shape[3]
	ho, wo := p.OutSize(h, wd, kh, kw)
	if ho < 1 || wo < 1 || !SameShape(y.Shape, []int{bs, o, ho, wo}) || (b != nil && b.Numel() != o) {
		return bad("conv2d", ts, "want y [%d %d %d %d]", bs, o, ho, wo)
	}
	wf := w.Float32s()
	var bf []float32
	if b != nil {
		bf = b.Float32s()
	}
	parallel(bs*o, func(idx int) {
		n, oc := idx/o, idx%o
		for oy := 0; oy < ho; oy++ {
			for ox := 0; ox < wo; ox++ {
				var s float64
				if bf != nil {
					s = float64(bf[oc])
				}
				for ic := 0; ic < c; ic++ {
					for ky := 0; ky < kh; ky++ {
						iy := oy*p.Stride - p.PadTop + ky
						if iy < 0 || iy >= h {
							continue
						}
						for kx := 0; kx < kw; kx++ {
							ix := ox*p.Stride - p.PadLeft + kx
							if ix < 0 || ix >= wd {
								continue
							}
							s += float64(x.F32[((n*c+ic)*h+iy)*wd+ix]) * float64(wf[((oc*c+ic)*kh+ky)*kw+kx])
						}
					}
				}
				y.F32[((n*o+oc)*ho+oy)*wo+ox] = float32(s)
			}
		}
	})
	return nil
}

func (*Ref) GroupNorm(y, x, gamma, beta *Tensor, groups int, eps float32, silu bool) error {
	if err := onHost("group_norm", y, x, gamma, beta); err != nil {
		return err
	}
	if err := checkF32("group_norm", y, x); err != nil {
		return err
	}
	ts := []*Tensor{x, gamma, beta}
	if len(x.Shape) < 2 || groups < 1 || x.Shape[1]%groups != 0 || !SameShape(x.Shape, y.Shape) ||
		gamma.Numel() != x.Shape[1] || beta.Numel() != x.Shape[1] {
		return bad("group_norm", ts, "want x [B, C, ...] with C divisible by %d groups, gamma and beta [C]", groups)
	}
	bs, c := x.Shape[0], x.Shape[1]
	hw := x.Numel() / (bs * c)
	cg := c / groups
	g, bt := gamma.Float32s(), beta.Float32s()
	parallel(bs*groups, func(idx int) {
		n, gi := idx/groups, idx%groups
		base := (n*c + gi*cg) * hw
		seg := x.F32[base : base+cg*hw]
		var mean float64
		for _, v := range seg {
			mean += float64(v)
		}
		mean /= float64(len(seg))
		var vr float64
		for _, v := range seg {
			d := float64(v) - mean
			vr += d * d
		}
		vr /= float64(len(seg))
		inv := 1 / math.Sqrt(vr+float64(eps))
		for ci := 0; ci < cg; ci++ {
			ch := gi*cg + ci
			for s := 0; s < hw; s++ {
				i := base + ci*hw + s
				v := (float64(x.F32[i])-mean)*inv*float64(g[ch]) + float64(bt[ch])
				if silu {
					v = v / (1 + math.Exp(-v))
				}
				y.F32[i] = float32(v)
			}
		}
	})
	return nil
}

func (*Ref) LayerNorm(y, x, gamma, beta *Tensor, eps float32) error {
	if err := onHost("layer_norm", y, x, gamma, beta); err != nil {
		return err
	}
	if err := checkF32("layer_norm", y, x); err != nil {
		return err
	}
	c := x.Dim(-1)
	if !SameShape(x.Shape, y.Shape) || gamma.Numel() != c || beta.Numel() != c {
		return bad("layer_norm", []*Tensor{x, gamma, beta}, "want x [..., C], gamma and beta [C]")
	}
	g, bt := gamma.Float32s(), beta.Float32s()
	parallel(x.Numel()/c, func(r int) {
		row := x.F32[r*c : (r+1)*c]
		var mean, vr float64
		for _, v := range row {
			mean += float64(v)
		}
		mean /= float64(c)
		for _, v := range row {
			d := float64(v) - mean
			vr += d * d
		}
		vr /= float64(c)
		inv := 1 / math.Sqrt(vr+float64(eps))
		for i, v := range row {
			y.F32[r*c+i] = float32((float64(v)-mean)*inv*float64(g[i]) + float64(bt[i]))
		}
	})
	return nil
}

func (*Ref) Attention(y, q, k, v *Tensor, heads int, causal bool) error {
	if err := onHost("attention", y, q, k, v); err != nil {
		return err
	}
	if err := checkF32("attention", y, q, k, v); err != nil {
		return err
	}
	ts := []*Tensor{q, k, v}
	if len(q.Shape) != 3 || !SameShape(k.Shape, v.Shape) || len(k.Shape) != 3 || !SameShape(y.Shape, q.Shape) ||
		q.Shape[0] != k.Shape[0] || q.Shape[2] != k.Shape[2] || heads < 1 || q.Shape[2]%heads != 0 ||
		(causal && q.Shape[1] != k.Shape[1]) {
		return bad("attention", ts, "want q [B, Lq, H*D], k and v [B, Lk, H*D] with %d heads", heads)
	}
	bs, lq, lk, hd := q.Shape[0], q.Shape[1], k.Shape[1], q.Shape[2]
	d := hd / heads
	scale := 1 / math.Sqrt(float64(d))
	parallel(bs*heads*lq, func(idx int) {
		n, h, i := idx/(heads*lq), (idx/lq)%heads, idx%lq
		qr := q.F32[(n*lq+i)*hd+h*d:][:d]
		end := lk
		if causal {
			end = i + 1
		}
		sc := make([]float64, end)
		mx := math.Inf(-1)
		for j := 0; j < end; j++ {
			kr := k.F32[(n*lk+j)*hd+h*d:][:d]
			var s float64
			for t := range qr {
				s += float64(qr[t]) * float64(kr[t])
			}
			sc[j] = s * scale
			mx = math.Max(mx, sc[j])
		}
		var sum float64
		for j := range sc {
			sc[j] = math.Exp(sc[j] - mx)
			sum += sc[j]
		}
		out := y.F32[(n*lq+i)*hd+h*d:][:d]
		for t := 0; t < d; t++ {
			var s float64
			for j := 0; j < end; j++ {
				s += sc[j] * float64(v.F32[(n*lk+j)*hd+h*d+t])
			}
			out[t] = float32(s / sum)
		}
	})
	return nil
}

// UnaryF64 applies op in float64; other backends are tested against it.
func UnaryF64(op Unary, x float64) float64 {
	switch op {
	case SiLU:
		return x / (1 + math.Exp(-x))
	case GELU:
		return 0.5 * x * (1 + math.Erf(x/math.Sqrt2))
	case QuickGELU:
		return x / (1 + math.Exp(-1.702*x))
	case ReLU:
		return math.Max(x, 0)
	case Tanh:
		return math.Tanh(x)
	}
	panic("tensor: unknown unary op")
}

func (*Ref) Unary(y, x *Tensor, op Unary) error {
	if err := onHost("unary", y, x); err != nil {
		return err
	}
	if err := checkF32("unary", y, x); err != nil {
		return err
	}
	if x.Numel() != y.Numel() || op > Tanh {
		return bad("unary", []*Tensor{x, y}, "want equal sizes and a known op")
	}
	for i, v := range x.F32 {
		y.F32[i] = float32(UnaryF64(op, float64(v)))
	}
	return nil
}

func (*Ref) Add(y, a, b *Tensor) error {
	if err := onHost("add", y, a, b); err != nil {
		return err
	}
	if err := checkF32("add", y, a, b); err != nil {
		return err
	}
	if a.Numel() != b.Numel() || a.Numel() != y.Numel() {
		return bad("add", []*Tensor{a, b, y}, "want equal sizes")
	}
	for i := range y.F32 {
		y.F32[i] = a.F32[i] + b.F32[i]
	}
	return nil
}

func (*Ref) Mul(y, a, b *Tensor) error {
	if err := onHost("mul", y, a, b); err != nil {
		return err
	}
	if err := checkF32("mul", y, a, b); err != nil {
		return err
	}
	if a.Numel() != b.Numel() || a.Numel() != y.Numel() {
		return bad("mul", []*Tensor{a, b, y}, "want equal sizes")
	}
	for i := range y.F32 {
		y.F32[i] = a.F32[i] * b.F32[i]
	}
	return nil
}

func (*Ref) Scale(y, x *Tensor, s, t float32) error {
	if err := onHost("scale", y, x); err != nil {
		return err
	}
	if err := checkF32("scale", y, x); err != nil {
		return err
	}
	if x.Numel() != y.Numel() {
		return bad("scale", []*Tensor{x, y}, "want equal sizes")
	}
	for i, v := range x.F32 {
		y.F32[i] = float32(float64(v)*float64(s) + float64(t))
	}
	return nil
}

func (*Ref) AddChannel(y, x, c *Tensor) error {
	if err := onHost("add_channel", y, x, c); err != nil {
		return err
	}
	if err := checkF32("add_channel", y, x, c); err != nil {
		return err
	}
	if len(x.Shape) < 2 || !SameShape(x.Shape, y.Shape) || !SameShape(c.Shape, x.Shape[:2]) {
		return bad("add_channel", []*Tensor{x, c}, "want x [B, C, ...], c [B, C]")
	}
	hw := x.Numel() / c.Numel()
	for i := range y.F32 {
		y.F32[i] = x.F32[i] + c.F32[i/hw]
	}
	return nil
}

func (*Ref) GEGLU(y, x *Tensor) error {
	if err := onHost("geglu", y, x); err != nil {
		return err
	}
	if err := checkF32("geglu", y, x); err != nil {
		return err
	}
	n2 := x.Dim(-1)
	if n2%2 != 0 || y.Dim(-1) != n2/2 || x.Numel()/n2 != y.Numel()/(n2/2) {
		return bad("geglu", []*Tensor{x, y}, "want x [..., 2N], y [..., N]")
	}
	n := n2 / 2
	for r := 0; r < x.Numel()/n2; r++ {
		for j := 0; j < n; j++ {
			a, g := float64(x.F32[r*n2+j]), float64(x.F32[r*n2+n+j])
			y.F32[r*n+j] = float32(a * UnaryF64(GELU, g))
		}
	}
	return nil
}

func (*Ref) Transpose(y, x *Tensor) error {
	if err := onHost("transpose", y, x); err != nil {
		return err
	}
	if err := checkF32("transpose", y, x); err != nil {
		return err
	}
	if len(x.Shape) != 3 || !SameShape(y.Shape, []int{x.Shape[0], x.Shape[2], x.Shape[1]}) {
		return bad("transpose", []*Tensor{x, y}, "want x [B, M, N], y [B, N, M]")
	}
	bs, m, n := x.Shape[0], x.Shape[1], x.Shape[2]
	for b := 0; b < bs; b++ {
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				y.F32[(b*n+j)*m+i] = x.F32[(b*m+i)*n+j]
			}
		}
	}
	return nil
}

func (*Ref) Concat(y, a, b *Tensor) error {
	if err := onHost("concat", y, a, b); err != nil {
		return err
	}
	if err := checkF32("concat", y, a, b); err != nil {
		return err
	}
	if len(a.Shape) < 2 || len(a.Shape) != len(b.Shape) || !SameShape(a.Shape[2:], b.Shape[2:]) ||
		a.Shape[0] != b.Shape[0] || len(y.Shape) != len(a.Shape) || y.Shape[0] != a.Shape[0] ||
		y.Shape[1] != a.Shape[1]+b.Shape[1] || !SameShape(y.Shape[2:], a.Shape[2:]) {
		return bad("concat", []*Tensor{a, b, y}, "want a [B, Ca, ...], b [B, Cb, ...], y [B, Ca+Cb, ...]")
	}
	na, nb := a.Numel()/a.Shape[0], b.Numel()/b.Shape[0]
	for n := 0; n < a.Shape[0]; n++ {
		copy(y.F32[n*(na+nb):], a.F32[n*na:(n+1)*na])
		copy(y.F32[n*(na+nb)+na:], b.F32[n*nb:(n+1)*nb])
	}
	return nil
}

func (*Ref) Upsample2x(y, x *Tensor) error {
	if err := onHost("upsample2x", y, x); err != nil {
		return err
	}
	if err := checkF32("upsample2x", y, x); err != nil {
		return err
	}
	if !upsampleShape(y, x) {
		return bad("upsample2x", []*Tensor{x, y}, "want x [B, C, H, W], y [B, C, 2H or 2H-1, 2W or 2W-1]")
	}
	h, w, oh, ow := x.Shape[2], x.Shape[3], y.Shape[2], y.Shape[3]
	for p := 0; p < x.Shape[0]*x.Shape[1]; p++ {
		for i := 0; i < oh; i++ {
			for j := 0; j < ow; j++ {
				y.F32[(p*oh+i)*ow+j] = x.F32[(p*h+i/2)*w+j/2]
			}
		}
	}
	return nil
}
