package sample

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/rng"
)

// Scalar float64 references of every sampler, written from the papers'
// formulas (several in the variance-preserving variables of DPM-Solver and
// UniPC: alpha = 1/sqrt(1+sigma^2), sigma_vp = alpha sigma, lambda =
// log(alpha/sigma_vp), x_vp = alpha x) rather than as the package writes them.
// Each runs one coordinate from x at sigmas[0]; z returns the next unit
// normal, one per step that adds noise.

type dfn func(x, sigma float64) float64

type refFunc func(D dfn, x float64, sigmas []float64, z func() float64) float64

func vpAlpha(s float64) float64  { return 1 / math.Sqrt(1+s*s) }
func vpSigma(s float64) float64  { return s / math.Sqrt(1+s*s) }
func vpLambda(s float64) float64 { return math.Log(vpAlpha(s) / vpSigma(s)) }

// refSamplers holds the references by sampler name.
var refSamplers = map[string]refFunc{
	"euler": func(D dfn, x float64, sig []float64, _ func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			x += (x - D(x, sig[i])) / sig[i] * (sig[i+1] - sig[i])
		}
		return x
	},
	// DDIM, eta 0 (Song et al. 2020, eq. 12) in the DDPM variables.
	"ddim": func(D dfn, x float64, sig []float64, _ func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			a, an := 1/(1+sig[i]*sig[i]), 1/(1+sig[i+1]*sig[i+1])
			x0 := D(x, sig[i])
			eps := (math.Sqrt(a)*x - math.Sqrt(a)*x0) / math.Sqrt(1-a)
			x = (math.Sqrt(an)*x0 + math.Sqrt(1-an)*eps) / math.Sqrt(an)
		}
		return x
	},
	"euler_a": func(D dfn, x float64, sig []float64, z func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			s, sn := sig[i], sig[i+1]
			down, up := ancestralStepRef(s, sn)
			if sn == 0 {
				down, up = 0, 0
			}
			x += (x - D(x, s)) / s * (down - s)
			if sn > 0 {
				x += up * z()
			}
		}
		return x
	},
	// Heun (Karras et al. 2022, Alg. 1, no churn): trapezoid on dx/ds.
	"heun": func(D dfn, x float64, sig []float64, _ func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			s, sn := sig[i], sig[i+1]
			f := func(x, s float64) float64 { return (x - D(x, s)) / s }
			if sn == 0 {
				x += f(x, s) * (sn - s)
				continue
			}
			xe := x + f(x, s)*(sn-s)
			x += (sn - s) / 2 * (f(x, s) + f(xe, sn))
		}
		return x
	},
	"dpm2": func(D dfn, x float64, sig []float64, _ func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			x = refDPM2To(D, x, sig[i], sig[i+1])
		}
		return x
	},
	"dpm2_a": func(D dfn, x float64, sig []float64, z func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			s, sn := sig[i], sig[i+1]
			if sn == 0 {
				x = refDPM2To(D, x, s, 0)
				continue
			}
			down, up := ancestralStepRef(s, sn)
			x = refDPM2To(D, x, s, down) + up*z()
		}
		return x
	},
	// DPM-Solver++(2S) (Lu et al. 2022, DPM-Solver++, Alg. 1, r = 1/2) in
	// the VP variables, to sigma_down, then ancestral noise.
	"dpmpp_2s_a": func(D dfn, x float64, sig []float64, z func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			s, sn := sig[i], sig[i+1]
			if sn == 0 {
				x = D(x, s) // the Euler step to 0
				continue
			}
			down, up := ancestralStepRef(s, sn)
			h := vpLambda(down) - vpLambda(s)
			sm := math.Exp(-(vpLambda(s) + h/2)) // the sigma whose lambda is the midpoint
			xv := vpAlpha(s) * x
			u := vpSigma(sm)/vpSigma(s)*xv - vpAlpha(sm)*(math.Exp(-h/2)-1)*D(x, s)
			x0m := D(u/vpAlpha(sm), sm)
			xv = vpSigma(down)/vpSigma(s)*xv - vpAlpha(down)*(math.Exp(-h)-1)*x0m
			x = xv/vpAlpha(down) + up*z()
		}
		return x
	},
	"dpmpp_2m": func(D dfn, x float64, sig []float64, _ func() float64) float64 {
		return refDPMpp2M(gaussFromD(D), []float64{x}, sig)[0]
	},
	// SDE-DPM-Solver++(2M) (Lu et al. 2022, DPM-Solver++, appendix), eta 1,
	// midpoint form, in the VP variables.
	"dpmpp_2m_sde": func(D dfn, x float64, sig []float64, z func() float64) float64 {
		var prev, hPrev float64
		for i := 0; i+1 < len(sig); i++ {
			s, sn := sig[i], sig[i+1]
			d := D(x, s)
			if sn == 0 {
				x = d
				break
			}
			h := vpLambda(sn) - vpLambda(s)
			at := vpAlpha(sn)
			xv := vpSigma(sn)/vpSigma(s)*math.Exp(-h)*vpAlpha(s)*x + at*(1-math.Exp(-2*h))*d
			if i > 0 {
				xv += at / 2 * (1 - math.Exp(-2*h)) * (d - prev) * h / hPrev
			}
			xv += vpSigma(sn) * math.Sqrt(1-math.Exp(-2*h)) * z()
			x = xv / at
			prev, hPrev = d, h
		}
		return x
	},
	// DPM-Solver++(3M) SDE, eta 1 (k-diffusion), with the divided
	// differences written as the quadratic through the last three D
	// against lambda.
	"dpmpp_3m_sde": func(D dfn, x float64, sig []float64, z func() float64) float64 {
		var ds, lams []float64 // history, newest last
		for i := 0; i+1 < len(sig); i++ {
			s, sn := sig[i], sig[i+1]
			d := D(x, s)
			if sn == 0 {
				return d
			}
			l, ln := -math.Log(s), -math.Log(sn)
			h := ln - l
			g := 2 * h
			phi2 := (math.Exp(-g)-1)/g + 1
			phi3 := phi2/g - 0.5
			x = math.Exp(-g)*x + (1-math.Exp(-g))*d
			switch n := len(ds); {
			case n == 1:
				x += phi2 * (d - ds[0]) / ((l - lams[0]) / h)
			case n >= 2:
				// Newton form of the quadratic through (l2, d2), (l1, d1),
				// (l, d), in units of h: first derivative at l and half the
				// second derivative.
				l1, l2 := lams[n-1], lams[n-2]
				q1 := (d - ds[n-1]) / ((l - l1) / h)
				q2 := (ds[n-1] - ds[n-2]) / ((l1 - l2) / h)
				curv := (q1 - q2) / ((l - l2) / h)
				slope := q1 + curv*(l-l1)/h
				x += phi2*slope - phi3*curv
			}
			x += sn * math.Sqrt(1-math.Exp(-2*h)) * z()
			ds, lams = append(ds, d), append(lams, l)
		}
		return x
	},
	"lcm": func(D dfn, x float64, sig []float64, z func() float64) float64 {
		for i := 0; i+1 < len(sig); i++ {
			x = D(x, sig[i])
			if sig[i+1] > 0 {
				x += sig[i+1] * z()
			}
		}
		return x
	},
	"unipc": refUniPC2,
}

// refDPM2To is k-diffusion's DPM-Solver-2 step from s to sTo (Euler to 0).
func refDPM2To(D dfn, x, s, sTo float64) float64 {
	f := func(x, s float64) float64 { return (x - D(x, s)) / s }
	if sTo == 0 {
		return x - f(x, s)*s
	}
	sm := math.Exp((math.Log(s) + math.Log(sTo)) / 2)
	xm := x + f(x, s)*(sm-s)
	return x + f(xm, sm)*(sTo-s)
}

// refUniPC2 is UniPC with the bh2 variant, order 2, data prediction, in the
// VP variables, following the loop of diffusers' UniPCMultistepScheduler:
// evaluate the model at the current sample, correct the sample with UniC
// (order of the last predictor), then predict with UniP of order
// min(2, steps left, steps taken + 1). The order-2 corrector solves
// [[1, 1], [r, 1]] rho = (b1, b2) by Cramer's rule.
func refUniPC2(D dfn, x float64, sig []float64, _ func() float64) float64 {
	n := len(sig) - 1
	var ms, ss []float64 // model outputs and sigmas, newest last
	var last float64     // the sample the last predictor started from
	lastOrder := 0
	coeffs := func(h float64) (b1, b2, bh float64) {
		e := math.Exp(-h) - 1 // expm1(-h), h phi_1 with hh = -h
		bh = e
		b1 = (e/(-h) - 1) / bh
		b2 = 2 * ((e/(-h)-1)/(-h) - 0.5) / bh
		return
	}
	for i := 0; i < n; i++ {
		s, sn := sig[i], sig[i+1]
		m := D(x, s)
		if lastOrder > 0 { // corrector from (last, ss[-1]) to s
			s0, m0 := ss[len(ss)-1], ms[len(ms)-1]
			h := vpLambda(s) - vpLambda(s0)
			b1, b2, bh := coeffs(h)
			xt := vpSigma(s)/vpSigma(s0)*vpAlpha(s0)*last - vpAlpha(s)*(math.Exp(-h)-1)*m0
			if lastOrder == 1 {
				xt -= vpAlpha(s) * bh * 0.5 * (m - m0)
			} else {
				r := (vpLambda(ss[len(ss)-2]) - vpLambda(s0)) / h
				rho0 := (b1 - b2) / (1 - r)
				rho1 := b1 - rho0
				xt -= vpAlpha(s) * bh * (rho0*(ms[len(ms)-2]-m0)/r + rho1*(m-m0))
			}
			x = xt / vpAlpha(s)
		}
		ms, ss = append(ms, m), append(ss, s)
		order := min(2, n-i, len(ms))
		last, lastOrder = x, order
		if sn == 0 {
			x = m
			continue
		}
		h := vpLambda(sn) - vpLambda(s)
		_, _, bh := coeffs(h)
		xt := vpSigma(sn)/vpSigma(s)*vpAlpha(s)*x - vpAlpha(sn)*(math.Exp(-h)-1)*m
		if order == 2 {
			r := (vpLambda(ss[len(ss)-2]) - vpLambda(s)) / h
			xt -= vpAlpha(sn) * bh * 0.5 * (ms[len(ms)-2] - m) / r
		}
		x = xt / vpAlpha(sn)
	}
	return x
}

// gaussFromD adapts a scalar denoiser to refDPMpp2M's gauss argument; only
// its d method is used there, so the denoiser must be a gauss one.
func gaussFromD(D dfn) gauss {
	// D(x, sigma) = mu + (x - mu) c(sigma): recover mu and s from two values.
	c := D(1, 1) - D(0, 1) // s^2/(s^2+1)
	mu := D(0, 1) / (1 - c)
	return gauss{mu: mu, s: math.Sqrt(c / (1 - c))}
}

// noisySamplers are the samplers that draw noise.
var noisySamplers = []string{"euler_a", "dpm2_a", "dpmpp_2s_a", "dpmpp_2m_sde", "dpmpp_3m_sde", "lcm"}

// twoCallSamplers call the denoiser twice per step but on the step to 0.
var twoCallSamplers = []string{"heun", "dpm2", "dpm2_a", "dpmpp_2s_a"}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestAllSamplersVsReference runs every sampler for 12 Karras steps on 64
// coordinates of Gaussian data with the ideal denoiser and compares with the
// scalar float64 references above, drawing the same noise (one Randn(64) per
// noisy step, checked through the stream position afterwards). The package
// keeps latents in float32, so the two differ by float32 rounding: tolerance
// 2e-6 of the largest value (measured up to 3e-7).
func TestAllSamplersVsReference(t *testing.T) {
	g := gauss{mu: 0.3, s: 0.5}
	sigmas := append(karras(12, 0.0291675, 14.6146), 0)
	steps := len(sigmas) - 1
	if len(Samplers) != 12 || len(refSamplers) != len(Samplers) {
		t.Fatalf("Samplers %v, %d references", Samplers, len(refSamplers))
	}
	for _, name := range Samplers {
		ref, ok := refSamplers[name]
		if !ok {
			t.Fatalf("no reference for %s", name)
		}
		x, src := start(64, 11, sigmas[0])
		_, src2 := start(64, 11, sigmas[0])
		draws := make([][]float32, steps)
		for k := range draws {
			draws[k] = src2.Randn(64)
		}
		calls := 0
		got, err := Run(context.Background(), name, x, sigmas, g.denoiser(&calls), src, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float64, len(x))
		used := 0
		for j := range x {
			k := 0
			want[j] = ref(g.d, float64(x[j]), sigmas, func() float64 { k++; return float64(draws[k-1][j]) })
			used = k
		}
		rel := maxRel(got, want)
		wantCalls, wantDraws := steps, 0
		if contains(twoCallSamplers, name) {
			wantCalls = 2*steps - 1
		}
		if contains(noisySamplers, name) {
			wantDraws = steps - 1
		}
		next := src.Randn(64)
		t.Logf("%-12s max rel %.2g vs float64 reference, %d denoiser calls, %d noise draws", name, rel, calls, used)
		if rel > 2e-6 || calls != wantCalls || used != wantDraws || next[5] != draws[wantDraws][5] {
			t.Errorf("%s: max rel %.3g (tolerance 2e-6), %d denoiser calls (want %d), reference drew %d (want %d), stream position ok %v",
				name, rel, calls, wantCalls, used, wantDraws, next[5] == draws[wantDraws][5])
		}
	}
}

// TestNoisySamplersNeedNoise: every sampler that draws noise refuses a nil
// Source with ErrNoNoise naming it; the deterministic ones accept nil.
func TestNoisySamplersNeedNoise(t *testing.T) {
	g := gauss{mu: 0, s: 1}
	for _, name := range Samplers {
		_, err := Run(context.Background(), name, []float32{1, 2}, []float64{14.6, 1, 0}, g.denoiser(nil), nil, nil)
		if contains(noisySamplers, name) {
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s without noise: %v", name, err)
			}
		} else if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// exactMoments returns the mean and variance of ref's output when x starts
// as sigmas[0] N(0, 1) and every z is N(0, 1): with Gaussian data the
// denoiser is affine, so the output is affine in the K+1 independent normals,
// out = A + sum_k B_k z_k. A is the run with every normal 0 and B_k the run
// with normal k set to 1, minus A.
func exactMoments(g gauss, ref refFunc, sigmas []float64) (mean, variance float64) {
	run := func(x0 float64, k int) float64 {
		n := 0
		return ref(g.d, x0, sigmas, func() float64 {
			n++
			if n == k {
				return 1
			}
			return 0
		})
	}
	a := run(0, 0)
	b0 := run(sigmas[0], 0) - a
	variance = b0 * b0
	for k := 1; k < len(sigmas); k++ {
		b := run(0, k) - a
		variance += b * b
	}
	return a, variance
}

// sampleMoments runs the sampler on n coordinates (independent samples)
// starting from sigmas[0] times CPU noise of the seed.
func sampleMoments(t *testing.T, name string, g Denoiser, sigmas []float64, n int, seed uint64) (mean, variance float64) {
	t.Helper()
	x, src := start(n, seed, sigmas[0])
	got, err := Run(context.Background(), name, x, sigmas, g, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return meanVar(got)
}

// meanVar returns the sample mean and (unbiased) variance of v.
func meanVar(v []float32) (mean, variance float64) {
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	for _, x := range v {
		variance += (float64(x) - mean) * (float64(x) - mean)
	}
	return mean, variance / float64(len(v)-1)
}

// TestNoisySamplersDistribution: on Gaussian data N(0.3, 0.5^2) with the
// ideal denoiser, 20000 independent samples (coordinates) of each noisy
// sampler must match
//
//  1. the exact mean and variance of the discrete process (exactMoments on
//     the float64 reference) within 5 standard errors, at 12 and 40 Karras
//     steps: this checks the noise is added with the right scale and count;
//  2. the target distribution N(0.3, 0.25) itself at 100 Karras steps (400
//     for the first-order euler_a), within 5 standard errors plus the
//     discretization bias of the sampler at that step count (from
//     exactMoments; asserted below 2.5% of the variance for euler_a, 1% for
//     the others; measured 1.8%, and 0.07% to 0.6%).
func TestNoisySamplersDistribution(t *testing.T) {
	g := gauss{mu: 0.3, s: 0.5}
	const n = 20000
	biasLimit := map[string]float64{"euler_a": 0.025, "dpm2_a": 0.01, "dpmpp_2s_a": 0.01,
		"dpmpp_2m_sde": 0.01, "dpmpp_3m_sde": 0.01, "lcm": 1}
	for si, name := range noisySamplers {
		ref := refSamplers[name]
		for _, steps := range []int{12, 40} {
			sigmas := append(karras(steps, 0.0291675, 14.6146), 0)
			wm, wv := exactMoments(g, ref, sigmas)
			m, v := sampleMoments(t, name, g.denoiser(nil), sigmas, n, uint64(100*si+steps))
			t.Logf("%-12s %3d steps: mean %.4f (exact %.4f), variance %.4f (exact %.4f)", name, steps, m, wm, v, wv)
			if math.Abs(m-wm) > 5*math.Sqrt(wv/n) || math.Abs(v-wv) > 5*wv*math.Sqrt(2.0/n) {
				t.Errorf("%s, %d steps: mean %.4f variance %.4f, exact %.4f and %.4f", name, steps, m, v, wm, wv)
			}
		}
		if name == "lcm" {
			continue // does not target the data with this denoiser: TestLCMConsistency
		}
		steps := 100
		if name == "euler_a" {
			steps = 400 // first order
		}
		sigmas := append(karras(steps, 0.0291675, 14.6146), 0)
		wm, wv := exactMoments(g, ref, sigmas)
		tv := g.s * g.s
		biasV := math.Abs(wv - tv)
		m, v := sampleMoments(t, name, g.denoiser(nil), sigmas, n, uint64(1000+si))
		t.Logf("%-12s %d steps: mean %.4f variance %.4f; target %.4f %.4f, discretization bias of the variance %.2g",
			name, steps, m, v, g.mu, tv, biasV)
		if biasV > biasLimit[name]*tv || math.Abs(wm-g.mu) > 1e-3 {
			t.Errorf("%s: %d-step exact moments %.4f %.4f, far from the target", name, steps, wm, wv)
		}
		if math.Abs(m-g.mu) > 5*math.Sqrt(tv/n)+math.Abs(wm-g.mu) || math.Abs(v-tv) > 5*tv*math.Sqrt(2.0/n)+biasV {
			t.Errorf("%s: mean %.4f variance %.4f, target %.4f %.4f", name, m, v, g.mu, tv)
		}
	}
}

// TestLCMConsistency: with the exact consistency function of Gaussian data
// as the model, f(x, sigma) = mu + (x - mu) s/sqrt(s^2 + sigma^2) (the end
// point of the probability-flow ODE, what an LCM learns), multistep
// consistency sampling started from the exact marginal N(mu, s^2 +
// sigma_max^2) gives exactly N(mu, s^2) for any step count: each re-noised x
// is distributed as the data plus sigma noise. 20000 samples must match
// within 5 standard errors at 1, 2, 4 and 8 steps.
func TestLCMConsistency(t *testing.T) {
	mu, s := 0.3, 0.5
	f := func(_ context.Context, x []float32, sigma float64) ([]float32, error) {
		out := make([]float32, len(x))
		for i, v := range x {
			out[i] = float32(mu + (float64(v)-mu)*s/math.Sqrt(s*s+sigma*sigma))
		}
		return out, nil
	}
	const n = 20000
	for _, steps := range []int{1, 2, 4, 8} {
		sigmas := append(karras(steps, 0.0291675, 14.6146), 0)
		if steps == 1 {
			sigmas = []float64{14.6146, 0}
		}
		// Start from the exact marginal at sigmas[0], N(mu, s^2 + sigma^2).
		src, _ := rng.New("cpu", uint64(steps))
		x := src.Randn(n)
		for i := range x {
			x[i] = float32(mu + float64(x[i])*math.Sqrt(s*s+sigmas[0]*sigmas[0]))
		}
		got, err := Run(context.Background(), "lcm", x, sigmas, f, src, nil)
		if err != nil {
			t.Fatal(err)
		}
		m, v := meanVar(got)
		t.Logf("lcm %d steps: mean %.4f variance %.4f (target %.4f %.4f)", steps, m, v, mu, s*s)
		if math.Abs(m-mu) > 5*s/math.Sqrt(n) || math.Abs(v-s*s) > 5*s*s*math.Sqrt(2.0/n) {
			t.Errorf("lcm %d steps: mean %.4f variance %.4f, want %.4f %.4f", steps, m, v, mu, s*s)
		}
	}
}

// TestUniPCOrder3: the order-3 UniPC step (not registered; Run uses order 2)
// on the ODE test of TestConvergenceOrder, through the same loop as Run.
func TestUniPCOrder3(t *testing.T) {
	g := gauss{mu: 0.3, s: 0.5}
	x0 := []float32{-40, -14.6, -3, 0, 2.5, 14.6, 29.2, 43.8}
	smin, smax := 0.0291675, 14.6146
	var errs []float64
	for n := 16; n <= 128; n *= 2 {
		sigmas := karras(n, smin, smax)
		x := append([]float32(nil), x0...)
		st := &state{total: n - 1, eval: func([]float32, float64) ([]float32, error) { return nil, nil }}
		step := unipcStep(3)
		for i := 0; i+1 < len(sigmas); i++ {
			d := make([]float32, len(x))
			for j := range x {
				d[j] = float32(g.d(float64(x[j]), sigmas[i]))
			}
			if err := step(st, x, d, sigmas[i], sigmas[i+1]); err != nil {
				t.Fatal(err)
			}
			st.i++
		}
		e := 0.0
		for i := range x0 {
			e = math.Max(e, math.Abs(float64(x[i])-g.exact(float64(x0[i]), smax, smin)))
		}
		errs = append(errs, e)
	}
	for k := 1; k < len(errs); k++ {
		p := math.Log2(errs[k-1] / errs[k])
		t.Logf("unipc order 3: steps %d err %.3g -> %d err %.3g: order %.2f", 16<<(k-1), errs[k-1], 16<<k, errs[k], p)
		if p < 2 {
			t.Errorf("observed order %.2f, want >= 2", p)
		}
	}
}

// TestEqualSigmas: a step between two equal sigmas is skipped (no denoiser
// call, no change, history kept), so a repeated sigma gives the result of the
// schedule without it, and progress still counts every step.
func TestEqualSigmas(t *testing.T) {
	g := gauss{mu: 0.3, s: 0.5}
	x := []float32{-3, 0.5, 7}
	for _, name := range []string{"dpmpp_2m", "unipc", "dpmpp_3m_sde", "heun"} {
		src1, _ := rng.New("cpu", 5)
		src2, _ := rng.New("cpu", 5)
		callsA := 0
		a, err := Run(context.Background(), name, x, []float64{14.6, 5, 1, 0.2, 0}, g.denoiser(&callsA), src1, nil)
		if err != nil {
			t.Fatal(err)
		}
		calls, last := 0, 0
		b, err := Run(context.Background(), name, x, []float64{14.6, 5, 5, 1, 0.2, 0}, g.denoiser(&calls), src2,
			func(step, total int) { last = step * 10 / total })
		if err != nil {
			t.Fatal(err)
		}
		for i := range a {
			if a[i] != b[i] {
				t.Errorf("%s: repeated sigma changes x[%d]: %v vs %v", name, i, b[i], a[i])
			}
		}
		if last != 10 || calls != callsA {
			t.Errorf("%s: progress ended at %d/10, %d denoiser calls (%d without the repeat)", name, last, calls, callsA)
		}
	}
}

// TestUnknownNames: an unknown sampler or schedule name is an error that
// quotes it and lists every valid name; names are case-insensitive.
func TestUnknownNames(t *testing.T) {
	g := gauss{mu: 0, s: 1}
	_, err := Run(context.Background(), "dpmpp_2m_karras", []float32{1}, []float64{1, 0}, g.denoiser(nil), nil, nil)
	if err == nil || !strings.Contains(err.Error(), `"dpmpp_2m_karras"`) {
		t.Fatalf("unknown sampler: %v", err)
	}
	for _, name := range Samplers {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list %s", err, name)
		}
	}
	s := sd15Schedule(t)
	_, err = s.Sigmas("beta57", 10)
	if err == nil || !strings.Contains(err.Error(), `"beta57"`) {
		t.Fatalf("unknown schedule: %v", err)
	}
	for _, name := range Schedules {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list %s", err, name)
		}
		if _, err := s.Sigmas(strings.ToUpper(name), 4); err != nil {
			t.Errorf("%s in capitals: %v", name, err)
		}
	}
	src, _ := rng.New("cpu", 1)
	for _, name := range Samplers {
		if _, err := Run(context.Background(), strings.ToUpper(name), []float32{1}, []float64{1, 0.5, 0}, g.denoiser(nil), src, nil); err != nil {
			t.Errorf("%s in capitals: %v", name, err)
		}
	}
}
