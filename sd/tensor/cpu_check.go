package tensor

// Shape and dtype checks of the native backends. They accept exactly what Ref
// accepts and, because native kernels trust their sizes, also reject weights
// whose data does not match their shape or dtype, nil tensors, and sizes that
// would make Ref divide by zero or index out of range.

// checkWeight validates a weight tensor (F32, F16 or BF16); nil is allowed when optional.
func checkWeight(op string, t *Tensor, optional bool) error {
	if t == nil {
		if optional {
			return nil
		}
		return &OpError{Op: op, Err: ErrShape, Detail: "missing weight"}
	}
	ok := false
	switch t.DType {
	case F32:
		ok = len(t.F32) == t.Numel()
	case F16, BF16:
		ok = len(t.Half) == t.Numel()
	}
	if !ok {
		return &OpError{Op: op, Shapes: [][]int{t.Shape}, DType: t.DType, Err: ErrDType,
			Detail: "weight data does not match its dtype and shape"}
	}
	return nil
}

func checkWeights(op string, optional bool, ts ...*Tensor) error {
	for _, t := range ts {
		if err := checkWeight(op, t, optional); err != nil {
			return err
		}
	}
	return nil
}

func checkLinear(y, x, w, b *Tensor) error {
	if err := checkF32("linear", y, x); err != nil {
		return err
	}
	if err := checkWeight("linear", w, false); err != nil {
		return err
	}
	if err := checkWeight("linear", b, true); err != nil {
		return err
	}
	ts := []*Tensor{x, w, b, y}
	if len(w.Shape) != 2 || len(x.Shape) < 1 || len(y.Shape) < 1 || x.Dim(-1) != w.Shape[1] ||
		y.Dim(-1) != w.Shape[0] || Numel(x.Shape[:len(x.Shape)-1]) != Numel(y.Shape[:len(y.Shape)-1]) ||
		(b != nil && b.Numel() != w.Shape[0]) {
		return bad("linear", ts, "want x [..., K], w [N, K], b [N], y [..., N]")
	}
	return nil
}

func checkMatMul(y, a, b *Tensor) error {
	if err := checkF32("matmul", y, a, b); err != nil {
		return err
	}
	if len(a.Shape) != 2 || len(b.Shape) != 2 || len(y.Shape) != 2 || a.Shape[1] != b.Shape[0] ||
		y.Shape[0] != a.Shape[0] || y.Shape[1] != b.Shape[1] {
		return bad("matmul", []*Tensor{a, b, y}, "want a [M, K], b [K, N], y [M, N]")
	}
	return nil
}

func checkConv2D(y, x, w, b *Tensor, p Conv2DParams) error {
	if err := checkF32("conv2d", y, x); err != nil {
		return err
	}
	if err := checkWeight("conv2d", w, false); err != nil {
		return err
	}
	if err := checkWeight("conv2d", b, true); err != nil {
		return err
	}
	ts := []*Tensor{x, w, b, y}
	if len(x.Shape) != 4 || len(w.Shape) != 4 || len(y.Shape) != 4 || w.Shape[1] != x.Shape[1] || p.Stride < 1 {
		return bad("conv2d", ts, "want x [B, C, H, W], w [O, C, kH, kW]")
	}
	if p.PadTop < 0 || p.PadLeft < 0 || p.PadBottom < 0 || p.PadRight < 0 {
		return bad("conv2d", ts, "negative padding %+v", p)
	}
	bs, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	o, kh, kw := w.Shape[0], w.Shape[2], w.Shape[3]
	ho, wo := p.OutSize(h, wd, kh, kw)
	if ho < 1 || wo < 1 || !SameShape(y.Shape, []int{bs, o, ho, wo}) || (b != nil && b.Numel() != o) {
		return bad("conv2d", ts, "want y [%d %d %d %d]", bs, o, ho, wo)
	}
	if c < 1 || h < 1 || wd < 1 || o < 1 || kh < 1 || kw < 1 {
		return bad("conv2d", ts, "empty input or kernel")
	}
	return nil
}

func checkGroupNorm(y, x, gamma, beta *Tensor, groups int) error {
	if err := checkF32("group_norm", y, x); err != nil {
		return err
	}
	if err := checkWeights("group_norm", false, gamma, beta); err != nil {
		return err
	}
	ts := []*Tensor{x, gamma, beta}
	if len(x.Shape) < 2 || groups < 1 || x.Shape[1]%groups != 0 || !SameShape(x.Shape, y.Shape) ||
		gamma.Numel() != x.Shape[1] || beta.Numel() != x.Shape[1] {
		return bad("group_norm", ts, "want x [B, C, ...] with C divisible by %d groups, gamma and beta [C]", groups)
	}
	return nil
}

func checkLayerNorm(y, x, gamma, beta *Tensor) error {
	if err := checkF32("layer_norm", y, x); err != nil {
		return err
	}
	if err := checkWeights("layer_norm", false, gamma, beta); err != nil {
		return err
	}
	if len(x.Shape) < 1 || x.Dim(-1) < 1 || !SameShape(x.Shape, y.Shape) || gamma.Numel() != x.Dim(-1) ||
		beta.Numel() != x.Dim(-1) {
		return bad("layer_norm", []*Tensor{x, gamma, beta}, "want x [..., C], gamma and beta [C]")
	}
	return nil
}

func checkAttention(y, q, k, v *Tensor, heads int, causal bool) error {
	if err := checkF32("attention", y, q, k, v); err != nil {
		return err
	}
	ts := []*Tensor{q, k, v}
	if len(q.Shape) != 3 || !SameShape(k.Shape, v.Shape) || len(k.Shape) != 3 || !SameShape(y.Shape, q.Shape) ||
		q.Shape[0] != k.Shape[0] || q.Shape[2] != k.Shape[2] || heads < 1 || q.Shape[2]%heads != 0 ||
		(causal && q.Shape[1] != k.Shape[1]) {
		return bad("attention", ts, "want q [B, Lq, H*D], k and v [B, Lk, H*D] with %d heads", heads)
	}
	if k.Shape[1] < 1 || q.Shape[2] < 1 {
		return bad("attention", ts, "want at least one key and D >= 1")
	}
	return nil
}

func checkUnary(y, x *Tensor, op Unary) error {
	if err := checkF32("unary", y, x); err != nil {
		return err
	}
	if x.Numel() != y.Numel() || op > Tanh {
		return bad("unary", []*Tensor{x, y}, "want equal sizes and a known op")
	}
	return nil
}

func checkBinary(op string, y, a, b *Tensor) error {
	if err := checkF32(op, y, a, b); err != nil {
		return err
	}
	if a.Numel() != b.Numel() || a.Numel() != y.Numel() {
		return bad(op, []*Tensor{a, b, y}, "want equal sizes")
	}
	return nil
}

func checkScale(y, x *Tensor) error {
	if err := checkF32("scale", y, x); err != nil {
		return err
	}
	if x.Numel() != y.Numel() {
		return bad("scale", []*Tensor{x, y}, "want equal sizes")
	}
	return nil
}

func checkAddChannel(y, x, c *Tensor) error {
	if err := checkF32("add_channel", y, x, c); err != nil {
		return err
	}
	if len(x.Shape) < 2 || !SameShape(x.Shape, y.Shape) || !SameShape(c.Shape, x.Shape[:2]) {
		return bad("add_channel", []*Tensor{x, c}, "want x [B, C, ...], c [B, C]")
	}
	return nil
}

func checkGEGLU(y, x *Tensor) error {
	if err := checkF32("geglu", y, x); err != nil {
		return err
	}
	if len(x.Shape) < 1 || len(y.Shape) < 1 {
		return bad("geglu", []*Tensor{x, y}, "want x [..., 2N], y [..., N]")
	}
	n2 := x.Dim(-1)
	if n2%2 != 0 || y.Dim(-1) != n2/2 || Numel(x.Shape[:len(x.Shape)-1]) != Numel(y.Shape[:len(y.Shape)-1]) {
		return bad("geglu", []*Tensor{x, y}, "want x [..., 2N], y [..., N]")
	}
	return nil
}

func checkTranspose(y, x *Tensor) error {
	if err := checkF32("transpose", y, x); err != nil {
		return err
	}
	if len(x.Shape) != 3 || !SameShape(y.Shape, []int{x.Shape[0], x.Shape[2], x.Shape[1]}) {
		return bad("transpose", []*Tensor{x, y}, "want x [B, M, N], y [B, N, M]")
	}
	return nil
}

func checkConcat(y, a, b *Tensor) error {
	if err := checkF32("concat", y, a, b); err != nil {
		return err
	}
	if len(a.Shape) < 2 || len(a.Shape) != len(b.Shape) || !SameShape(a.Shape[2:], b.Shape[2:]) ||
		a.Shape[0] != b.Shape[0] || len(y.Shape) != len(a.Shape) || y.Shape[0] != a.Shape[0] ||
		y.Shape[1] != a.Shape[1]+b.Shape[1] || !SameShape(y.Shape[2:], a.Shape[2:]) {
		return bad("concat", []*Tensor{a, b, y}, "want a [B, Ca, ...], b [B, Cb, ...], y [B, Ca+Cb, ...]")
	}
	return nil
}

func checkUpsample2x(y, x *Tensor) error {
	if err := checkF32("upsample2x", y, x); err != nil {
		return err
	}
	if !upsampleShape(y, x) {
		return bad("upsample2x", []*Tensor{x, y}, "want x [B, C, H, W], y [B, C, 2H or 2H-1, 2W or 2W-1]")
	}
	return nil
}

// upsampleShape reports whether y [B, C, OH, OW] is a 2x nearest upsampling
// of x [B, C, H, W], possibly without its last row or column.
func upsampleShape(y, x *Tensor) bool {
	if len(x.Shape) != 4 || len(y.Shape) != 4 || y.Shape[0] != x.Shape[0] || y.Shape[1] != x.Shape[1] {
		return false
	}
	ok := func(o, n int) bool { return o == 2*n || (n > 0 && o == 2*n-1) }
	return ok(y.Shape[2], x.Shape[2]) && ok(y.Shape[3], x.Shape[3])
}
