package sample

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/internal/npy"
	"github.com/gosd/gosd/sd/rng"
)

// maxRel is max |got-want| / max |want|, the error measure of the golden README.
func maxRel(got []float32, want []float64) float64 {
	var d, m float64
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i])-want[i]))
		m = math.Max(m, math.Abs(want[i]))
	}
	return d / m
}

func f64s(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// TestGoldenEulerStep: the first step of the golden run. denoised = x -
// sigma*eps with eps = uncond + 5 (cond - uncond) from the UNet outputs of the
// golden files; one Euler step from sigmas[0] to sigmas[1] must give
// latent_step1.npy. The golden ran the step in float32 tensor ops; this
// package rounds once per element from float64, so the two differ by float32
// rounding: measured max |diff| / max |value| = 6.2e-8, tolerance 1e-6.
func TestGoldenEulerStep(t *testing.T) {
	read := func(name string) []float32 {
		v, _, err := npy.Read(filepath.Join(goldenDir, name))
		if err != nil {
			t.Skip("golden data not present:", err)
		}
		return v
	}
	x, eu, ec, sig, want := read("latent_init.npy"), read("eps_uncond_0.npy"), read("eps_cond_0.npy"),
		read("sigmas.npy"), read("latent_step1.npy")
	if len(x) != 3072 || len(eu) != 3072 || len(ec) != 3072 || len(want) != 3072 || len(sig) != 4 {
		t.Fatal("unexpected golden shapes")
	}
	denoise := func(_ context.Context, xin []float32, sigma float64) ([]float32, error) {
		if sigma != float64(sig[0]) {
			return nil, fmt.Errorf("denoiser called at sigma %v", sigma)
		}
		d := make([]float32, len(xin))
		for i := range xin {
			eps := eu[i] + 5*(ec[i]-eu[i])
			d[i] = xin[i] - float32(sigma)*eps
		}
		return d, nil
	}
	got, err := Run(context.Background(), "euler", x, []float64{float64(sig[0]), float64(sig[1])}, denoise, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rel := maxRel(got, f64s(want))
	t.Logf("euler step vs latent_step1: max rel %.2g", rel)
	if rel > 1e-6 {
		t.Fatalf("max rel error %.3g > 1e-6", rel)
	}
	if maxRel(x, f64s(want)) < 1e-2 {
		t.Fatal("step did not move the latent")
	}
}

// gauss is data distributed N(mu, s^2) in each coordinate, whose ideal
// denoiser is known in closed form: D(x, sigma) = mu + (x - mu) s^2/(s^2+sigma^2).
type gauss struct{ mu, s float64 }

func (g gauss) d(x, sigma float64) float64 {
	return g.mu + (x-g.mu)*g.s*g.s/(g.s*g.s+sigma*sigma)
}

func (g gauss) denoiser(calls *int) Denoiser {
	return func(_ context.Context, x []float32, sigma float64) ([]float32, error) {
		if calls != nil {
			*calls++
		}
		out := make([]float32, len(x))
		for i, v := range x {
			out[i] = float32(g.d(float64(v), sigma))
		}
		return out, nil
	}
}

// exact solves the probability-flow ODE dx/dsigma = (x - D(x, sigma))/sigma
// from (x0, sigma0) to sigma: x - mu scales with sqrt(s^2 + sigma^2).
func (g gauss) exact(x0, sigma0, sigma float64) float64 {
	return g.mu + (x0-g.mu)*math.Sqrt(g.s*g.s+sigma*sigma)/math.Sqrt(g.s*g.s+sigma0*sigma0)
}

// karras is the Karras et al. (2022) eq. 5 schedule in float64, without the
// final 0.
func karras(n int, smin, smax float64) []float64 {
	out := make([]float64, n)
	a, b := math.Pow(smax, 1/7.0), math.Pow(smin, 1/7.0)
	for i := range out {
		out[i] = math.Pow(a+float64(i)/float64(n-1)*(b-a), 7)
	}
	return out
}

// Float64 references, written from the papers' formulas in their own
// variables rather than as the package writes them.

// refDDIM is Song et al. (2020) eq. 12 with eta 0 in the DDPM variables:
// a = 1/(1+sigma^2), x_ddpm = sqrt(a) x, eps from the predicted x0, then
// x_ddpm' = sqrt(a') x0 + sqrt(1-a') eps, mapped back by 1/sqrt(a').
func refDDIM(g gauss, x []float64, sigmas []float64) []float64 {
	x = append([]float64(nil), x...)
	for i := 0; i+1 < len(sigmas); i++ {
		a, an := 1/(1+sigmas[i]*sigmas[i]), 1/(1+sigmas[i+1]*sigmas[i+1])
		for j := range x {
			x0 := g.d(x[j], sigmas[i])
			xd := math.Sqrt(a) * x[j]
			eps := (xd - math.Sqrt(a)*x0) / math.Sqrt(1-a)
			x[j] = (math.Sqrt(an)*x0 + math.Sqrt(1-an)*eps) / math.Sqrt(an)
		}
	}
	return x
}

// refDPMpp2M is DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in the VP variables
// alpha_t = 1/sqrt(1+sigma^2), sigma_t = sigma alpha_t, lambda = log(alpha_t /
// sigma_t), on x_vp = alpha_t x; the step to sigma 0 returns the denoised
// value, as k-diffusion does.
func refDPMpp2M(g gauss, x []float64, sigmas []float64) []float64 {
	x = append([]float64(nil), x...)
	var prev []float64
	alpha := func(s float64) float64 { return 1 / math.Sqrt(1+s*s) }
	lambda := func(s float64) float64 { return math.Log(alpha(s) / (s * alpha(s))) }
	for i := 0; i+1 < len(sigmas); i++ {
		s, sn := sigmas[i], sigmas[i+1]
		d := make([]float64, len(x))
		for j := range x {
			d[j] = g.d(x[j], s)
		}
		if sn == 0 {
			copy(x, d)
			prev = d
			continue
		}
		h := lambda(sn) - lambda(s)
		for j := range x {
			dd := d[j]
			if prev != nil {
				r := (lambda(s) - lambda(sigmas[i-1])) / h
				dd = (1+1/(2*r))*d[j] - 1/(2*r)*prev[j]
			}
			xvp := alpha(s) * x[j]
			xvp = (sn*alpha(sn))/(s*alpha(s))*xvp - alpha(sn)*math.Expm1(-h)*dd
			x[j] = xvp / alpha(sn)
		}
		prev = d
	}
	return x
}

// refEulerA is k-diffusion's Euler ancestral written out in float64, drawing
// the same noise as the sampler from src.
func refEulerA(g gauss, x []float64, sigmas []float64, src rng.Source) []float64 {
	x = append([]float64(nil), x...)
	for i := 0; i+1 < len(sigmas); i++ {
		s, sn := sigmas[i], sigmas[i+1]
		up := math.Min(sn, math.Sqrt(sn*sn*(s*s-sn*sn)/(s*s)))
		down := math.Sqrt(sn*sn - up*up)
		for j := range x {
			dx := (x[j] - g.d(x[j], s)) / s
			x[j] += dx * (down - s)
		}
		if sn > 0 {
			z := src.Randn(len(x))
			for j := range x {
				x[j] += float64(z[j]) * up
			}
		}
	}
	return x
}

// start returns n starting latents sigma_max * N(0, 1) from a CPU generator.
func start(n int, seed uint64, smax float64) ([]float32, rng.Source) {
	src, _ := rng.New("cpu", seed)
	x := src.Randn(n)
	for i := range x {
		x[i] = float32(float64(x[i]) * smax)
	}
	return x, src
}

// TestSamplersVsReference runs every sampler on Gaussian data with its ideal
// denoiser and compares with the float64 references above. The package works
// on float32 latents, so it differs from the references by float32 rounding:
// tolerance 2e-6 of the largest value.
func TestSamplersVsReference(t *testing.T) {
	g := gauss{mu: 0.3, s: 0.5}
	sigmas := append(karras(12, 0.0291675, 14.6146), 0)
	for _, name := range []string{"euler", "euler_a", "dpmpp_2m", "ddim"} { // the others: TestAllSamplersVsReference
		x, src := start(64, 11, sigmas[0])
		calls := 0
		got, err := Run(context.Background(), name, x, sigmas, g.denoiser(&calls), src, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want []float64
		switch name {
		case "euler", "ddim":
			want = refDDIM(g, f64s(x), sigmas)
		case "dpmpp_2m":
			want = refDPMpp2M(g, f64s(x), sigmas)
		case "euler_a":
			_, src2 := start(64, 11, sigmas[0])
			want = refEulerA(g, f64s(x), sigmas, src2)
		}
		rel := maxRel(got, want)
		t.Logf("%s: max rel %.2g vs float64 reference", name, rel)
		if rel > 2e-6 || calls != len(sigmas)-1 {
			t.Errorf("%s: max rel %.3g (tolerance 2e-6), %d denoiser calls", name, rel, calls)
		}
	}
}

// TestConvergenceOrder integrates the probability-flow ODE of Gaussian data
// from sigma 14.6 to 0.03 (Karras schedule, no final 0) and compares with its
// exact solution. Doubling the steps must divide the error by about 2^p:
// p = 1 for Euler (and DDIM, the same update), p = 2 for DPM-Solver++(2M),
// Heun and DPM-Solver-2, and for UniPC with order 2 (UniP-2 with the UniC
// corrector is of order 3 in theory, the final step being of order 1) at
// least 2.5. Measured orders (16 -> 32 -> 64 -> 128 steps): euler and ddim
// 1.00-1.01, dpmpp_2m 2.05-2.13, heun 2.04-2.16, dpm2 2.04-2.15, unipc
// 3.18-3.68.
func TestConvergenceOrder(t *testing.T) {
	g := gauss{mu: 0.3, s: 0.5}
	x0 := []float32{-40, -14.6, -3, 0, 2.5, 14.6, 29.2, 43.8}
	smin, smax := 0.0291675, 14.6146
	for _, c := range []struct {
		name     string
		lo, hi   float64
		minSteps int
	}{{"euler", 0.85, 1.15, 16}, {"ddim", 0.85, 1.15, 16}, {"dpmpp_2m", 1.8, 2.4, 16},
		{"heun", 1.8, 2.4, 16}, {"dpm2", 1.8, 2.4, 16}, {"unipc", 2.5, 4.5, 16}} {
		var errs []float64
		for n := c.minSteps; n <= c.minSteps*8; n *= 2 {
			got, err := Run(context.Background(), c.name, x0, karras(n, smin, smax), g.denoiser(nil), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			e := 0.0
			for i := range x0 {
				e = math.Max(e, math.Abs(float64(got[i])-g.exact(float64(x0[i]), smax, smin)))
			}
			errs = append(errs, e)
		}
		for k := 1; k < len(errs); k++ {
			p := math.Log2(errs[k-1] / errs[k])
			t.Logf("%s: steps %d err %.3g -> %d err %.3g: order %.2f", c.name,
				c.minSteps<<(k-1), errs[k-1], c.minSteps<<k, errs[k], p)
			if p < c.lo || p > c.hi {
				t.Errorf("%s: observed order %.2f, want %.2f..%.2f", c.name, p, c.lo, c.hi)
			}
		}
	}
}

// TestEulerAncestralDistribution: with Gaussian data the ancestral sampler is
// linear in its Gaussian inputs, so the mean and variance of its output follow
// a closed-form recursion (per step x - mu scales by k = 1 + (1 - c)(down -
// sigma)/sigma with c = s^2/(s^2+sigma^2), then gains variance up^2). 20000
// samples must match them within 5 standard errors (30 steps fall short of
// the data variance, 0.197 for 0.25; 1000 steps must reach it).
func TestEulerAncestralDistribution(t *testing.T) {
	g := gauss{mu: 0.3, s: 0.5}
	sigmas := append(karras(30, 0.0291675, 14.6146), 0)
	const n = 20000
	x, src := start(n, 3, sigmas[0])
	got, err := Run(context.Background(), "euler_a", x, sigmas, g.denoiser(nil), src, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, v := ancestralMoments(g, sigmas)
	var sum, sum2 float64
	for _, val := range got {
		sum += float64(val)
	}
	mean := sum / n
	for _, val := range got {
		sum2 += (float64(val) - mean) * (float64(val) - mean)
	}
	vr := sum2 / (n - 1)
	wantMean, wantVar := g.mu+m, v
	_, v1000 := ancestralMoments(g, append(karras(1000, 0.0291675, 14.6146), 0))
	t.Logf("recursion variance with 1000 steps: %.4f", v1000)
	t.Logf("mean %.4f (expected %.4f), variance %.4f (expected %.4f, data %.4f)", mean, wantMean, vr, wantVar, g.s*g.s)
	if math.Abs(mean-wantMean) > 5*math.Sqrt(wantVar/n) || math.Abs(vr-wantVar) > 5*wantVar*math.Sqrt(2.0/n) {
		t.Fatalf("mean %.4f variance %.4f, expected %.4f and %.4f", mean, vr, wantMean, wantVar)
	}
	// With many steps the sampler reaches the data distribution.
	if math.Abs(v1000-g.s*g.s) > 0.005 || v1000 < wantVar {
		t.Fatalf("variance with 1000 steps %.4f, want near the data's %.4f", v1000, g.s*g.s)
	}
}

// ancestralMoments returns the mean and variance of x - mu after Euler
// ancestral sampling from x = sigmas[0] N(0, 1), by the recursion above.
func ancestralMoments(g gauss, sigmas []float64) (m, v float64) {
	m, v = -g.mu, sigmas[0]*sigmas[0]
	for i := 0; i+1 < len(sigmas); i++ {
		s, sn := sigmas[i], sigmas[i+1]
		down, up := ancestralStepRef(s, sn)
		c := g.s * g.s / (g.s*g.s + s*s)
		k := 1 + (1-c)*(down-s)/s
		m, v = k*m, k*k*v+up*up
	}
	return m, v
}

// ancestralStepRef is k-diffusion's get_ancestral_step for eta 1.
func ancestralStepRef(s, sn float64) (down, up float64) {
	up = math.Min(sn, math.Sqrt(sn*sn*(s*s-sn*sn)/(s*s)))
	return math.Sqrt(sn*sn - up*up), up
}

// TestDeterminism: the same seed gives the same bits, another seed other ones.
func TestDeterminism(t *testing.T) {
	g := gauss{mu: 0, s: 1}
	sigmas := append(karras(6, 0.03, 14.6), 0)
	run := func(seed uint64) []float32 {
		src, err := rng.New("cuda", seed)
		if err != nil {
			t.Fatal(err)
		}
		x := src.Randn(256)
		for i := range x {
			x[i] *= float32(sigmas[0])
		}
		out, err := Run(context.Background(), "euler_a", x, sigmas, g.denoiser(nil), src, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b, c := run(42), run(42), run(43)
	same := 0
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("seed 42 differs at %d: %v vs %v", i, a[i], b[i])
		}
		if a[i] == c[i] {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("seeds 42 and 43 agree on %d of %d values", same, len(a))
	}
}

// TestCancellation: Run checks ctx before each step.
func TestCancellation(t *testing.T) {
	sigmas := append(karras(10, 0.03, 14.6), 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := 0
	var steps []int
	d := func(_ context.Context, x []float32, sigma float64) ([]float32, error) {
		calls++
		if calls == 2 {
			cancel()
		}
		return append([]float32(nil), x...), nil
	}
	_, err := Run(ctx, "dpmpp_2m", make([]float32, 8), sigmas, d, nil, func(step, total int) {
		if total != 10 {
			t.Errorf("progress total %d, want 10", total)
		}
		steps = append(steps, step)
	})
	if !errors.Is(err, context.Canceled) || calls != 2 || len(steps) != 2 || steps[1] != 2 {
		t.Fatalf("err %v, %d calls, progress %v; want Canceled after 2 steps", err, calls, steps)
	}
	calls = 0
	if _, err := Run(ctx, "euler", make([]float32, 8), sigmas, d, nil, nil); !errors.Is(err, context.Canceled) || calls != 0 {
		t.Fatalf("canceled context: err %v, %d calls", err, calls)
	}
}

func TestRunErrors(t *testing.T) {
	ctx := context.Background()
	g := gauss{mu: 0, s: 1}
	sigmas := []float64{14.6, 1, 0}
	x := []float32{1, 2, 3}
	_, err := Run(ctx, "heun++", x, sigmas, g.denoiser(nil), nil, nil)
	if err == nil || !strings.Contains(err.Error(), `"heun++"`) || !strings.Contains(err.Error(), "dpmpp_2m") {
		t.Errorf("unknown sampler error: %v", err)
	}
	if _, err := Run(ctx, "euler_a", x, sigmas, g.denoiser(nil), nil, nil); !errors.Is(err, ErrNoNoise) {
		t.Errorf("euler_a without noise: %v", err)
	}
	for _, bad := range [][]float64{{}, {1, 2}, {1, 0, 0}, {1, -1}, {math.Inf(1), 0}, {1, math.NaN()}} {
		if _, err := Run(ctx, "euler", x, bad, g.denoiser(nil), nil, nil); err == nil {
			t.Errorf("sigmas %v accepted", bad)
		}
	}
	boom := errors.New("boom")
	failing := func(context.Context, []float32, float64) ([]float32, error) { return nil, boom }
	if _, err := Run(ctx, "euler", x, sigmas, failing, nil, nil); !errors.Is(err, boom) {
		t.Errorf("denoiser error not wrapped: %v", err)
	}
	short := func(context.Context, []float32, float64) ([]float32, error) { return []float32{1}, nil }
	if _, err := Run(ctx, "euler", x, sigmas, short, nil, nil); err == nil || !strings.Contains(err.Error(), "1 values for 3") {
		t.Errorf("short denoiser output: %v", err)
	}
	if _, err := Run(ctx, "euler", x, sigmas, nil, nil, nil); err == nil {
		t.Error("nil denoiser accepted")
	}
	// x is left alone and a single sigma means no step.
	out, err := Run(ctx, "EULER", x, sigmas, g.denoiser(nil), nil, nil)
	if err != nil || x[0] != 1 || x[2] != 3 || out[0] == 1 {
		t.Errorf("x modified or not sampled: x %v out %v err %v", x, out, err)
	}
	out, err = Run(ctx, "euler", x, []float64{5}, g.denoiser(nil), nil, nil)
	if err != nil || len(out) != 3 || out[1] != 2 {
		t.Errorf("zero steps: %v %v", out, err)
	}
}
