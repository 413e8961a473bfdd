package sample

import "math"

// unipcStep returns the UniPC step ("unipc") of the given order, 1..3 (Zhao et
// al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
// of Diffusion Models"), in the form of diffusers' UniPCMultistepScheduler
// with its defaults: data prediction, the B(h) = expm1(-h) ("bh2") variant,
// lower_order_final, warm-up with lower orders, and the corrector on every
// step but the first. Run registers order 2, diffusers' default. (ComfyUI's
// uni_pc_bh2 runs order 3 and stops at sigma 0.001 instead of 0; that is not
// reproduced.)
//
// In the variables of this package (alpha = 1, lambda = -log sigma; the
// data-prediction update is the same in the VP variables of the paper), a
// step from s0 to t with h = lambda_t - lambda_s0 and model outputs m0 at s0
// and m_k at earlier sigmas s_k:
//
//   - predictor UniP-p: x_t = (t/s0) x - expm1(-h) m0 - B(h) sum_k rho_k D_k,
//     D_k = (m_k - m0)/r_k, r_k = (lambda_{s_k} - lambda_s0)/h, with rho =
//     (1/2) for p = 2 and the solution of the p-1 order conditions for p = 3;
//   - corrector UniC-p, once the model output m_t at the predicted x_t is
//     known: the same update from the previous sample with the extra point
//     (r = 1, D = m_t - m0), rho solving all p conditions (rho = (1/2) for
//     p = 1). The corrected sample replaces x_t, and m_t (computed at the
//     uncorrected x_t) is reused as its model output: no extra denoiser call.
//
// The order conditions are sum_k rho_k r_k^(i-1) = b_i for i = 1..p, with
// b_i from diffusers' recurrence (see unipcCoeffs). Orders start at 1 and
// rise by one per step (warm-up); near the end a step uses at most the
// number of steps left (lower_order_final: order 1 on the last step), and a
// step to sigma 0 uses order 1, which returns m0.
func unipcStep(order int) stepFunc {
	return func(st *state, x, d []float32, s, sNext float64) error {
		if st.last != nil {
			unipcCorrect(st, x, d, s)
		}
		st.push(d, s, order)
		p := min(order, st.total-st.i, len(st.hist))
		if sNext == 0 {
			p = 1
		}
		if st.last == nil {
			st.last = make([]float32, len(x))
		}
		copy(st.last, x)
		st.lastOrder = p
		unipcPredict(x, st.hist, st.histSigma, p, sNext)
		return nil
	}
}

// unipcCoeffs returns diffusers' UniPC right-hand sides b_1..b_p and B(h) for
// a step of half log-SNR h > 0 (hh = -h for data prediction):
// hphi_k starts at expm1(hh)/hh - 1 and recurs as hphi_k/hh - 1/(k+1)!,
// b_i = hphi_i i! / B(h), B(h) = expm1(hh) ("bh2").
func unipcCoeffs(h float64, p int) (b []float64, bh float64) {
	hh := -h
	bh = math.Expm1(hh)
	hphik := math.Expm1(hh)/hh - 1
	fact := 1.0
	b = make([]float64, p)
	for i := 1; i <= p; i++ {
		b[i-1] = hphik * fact / bh
		fact *= float64(i + 1)
		hphik = hphik/hh - 1/fact
	}
	return b, bh
}

// unipcRhos solves sum_k rho_k r_k^(i-1) = b_i for i = 1..len(r).
func unipcRhos(r, b []float64) []float64 {
	n := len(r)
	a := make([][]float64, n)
	for i := range a {
		a[i] = make([]float64, n+1)
		for k := range n {
			a[i][k] = math.Pow(r[k], float64(i))
		}
		a[i][n] = b[i]
	}
	return solve(a)
}

// solve solves a small linear system given as an augmented n x (n+1) matrix,
// by Gaussian elimination with partial pivoting.
func solve(a [][]float64) []float64 {
	n := len(a)
	for c := 0; c < n; c++ {
		piv := c
		for r := c + 1; r < n; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[piv][c]) {
				piv = r
			}
		}
		a[c], a[piv] = a[piv], a[c]
		for r := c + 1; r < n; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k <= n; k++ {
				a[r][k] -= f * a[c][k]
			}
		}
	}
	x := make([]float64, n)
	for r := n - 1; r >= 0; r-- {
		v := a[r][n]
		for k := r + 1; k < n; k++ {
			v -= a[r][k] * x[k]
		}
		x[r] = v / a[r][r]
	}
	return x
}

// unipcPredict is UniP-p from sigma hist[0] (x, model output hist[0]) to
// sNext, in place; hist and sigmas are newest first.
func unipcPredict(x []float32, hist [][]float32, sigmas []float64, p int, sNext float64) {
	m0, s0 := hist[0], sigmas[0]
	if sNext == 0 {
		copy(x, m0)
		return
	}
	h := math.Log(s0) - math.Log(sNext)
	b, bh := unipcCoeffs(h, p)
	r := make([]float64, p-1)
	for k := range r {
		r[k] = (math.Log(s0) - math.Log(sigmas[k+1])) / h
	}
	var rho []float64
	switch p {
	case 1:
	case 2:
		rho = []float64{0.5}
	default:
		rho = unipcRhos(r, b[:p-1])
	}
	a, c := sNext/s0, -math.Expm1(-h)
	for j := range x {
		v := float64(a*float64(x[j])) + float64(c*float64(m0[j]))
		var res float64
		for k := range rho {
			res += float64(rho[k] * (float64(hist[k+1][j]) - float64(m0[j])) / r[k])
		}
		x[j] = float32(v - float64(bh*res))
	}
}

// unipcCorrect is UniC-p (p = st.lastOrder) of the sample x at sigma t that
// the last predictor made from st.last, given the model output mt at x; it
// overwrites x with the corrected sample. st.hist still ends at the previous
// step.
func unipcCorrect(st *state, x, mt []float32, t float64) {
	p := st.lastOrder
	m0, s0 := st.hist[0], st.histSigma[0]
	h := math.Log(s0) - math.Log(t)
	b, bh := unipcCoeffs(h, p)
	r := make([]float64, p)
	for k := 0; k < p-1; k++ {
		r[k] = (math.Log(s0) - math.Log(st.histSigma[k+1])) / h
	}
	r[p-1] = 1
	rho := []float64{0.5}
	if p > 1 {
		rho = unipcRhos(r, b)
	}
	a, c := t/s0, -math.Expm1(-h)
	for j := range x {
		v := float64(a*float64(st.last[j])) + float64(c*float64(m0[j]))
		var res float64
		for k := 0; k < p-1; k++ {
			res += float64(rho[k] * (float64(st.hist[k+1][j]) - float64(m0[j])) / r[k])
		}
		res += float64(rho[p-1] * (float64(mt[j]) - float64(m0[j])))
		x[j] = float32(v - float64(bh*res))
	}
}
