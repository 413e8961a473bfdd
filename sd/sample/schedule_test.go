package sample

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/internal/npy"
)

var (
	sharedDir = filepath.Join("..", "..", "..", "shared")
	goldenDir = filepath.Join(sharedDir, "golden", "sd15-dev-fox")
)

func sd15Schedule(t *testing.T) *Schedule {
	t.Helper()
	s, err := NewScheduleFromConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// relDiff is |a-b| / |b| (|a-b| when b is 0).
func relDiff(a, b float64) float64 {
	if b == 0 {
		return math.Abs(a)
	}
	return math.Abs(a-b) / math.Abs(b)
}

// TestDDPMBuffers pins alphas_cumprod and the sigma range against the float32
// buffer of an LDM checkpoint (values read from the random SD 1.5 checkpoint
// of tools/mkckpt, which computes them as the LDM code does).
func TestDDPMBuffers(t *testing.T) {
	ac, err := DefaultDDPM().AlphasCumprod()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		i    int
		want float32
	}{{0, 0.999149978}, {500, 0.276332676}, {999, 0.00466009835}} {
		if got := float32(ac[c.i]); got != c.want {
			t.Errorf("alphas_cumprod[%d] = %.9g, want %.9g", c.i, got, c.want)
		}
	}
	s := sd15Schedule(t)
	if s.Timesteps() != 1000 || float32(s.SigmaMin()) != 0.0291675329 || float32(s.SigmaMax()) != 14.6146421 {
		t.Errorf("T %d, sigma min %.9g max %.9g; want 1000, 0.0291675329, 14.6146421",
			s.Timesteps(), s.SigmaMin(), s.SigmaMax())
	}
	// The diffusers config of SD 1.5 describes the same schedule.
	path := filepath.Join(sharedDir, "models", "sd15", "scheduler", "scheduler_config.json")
	if _, err := os.Stat(path); err == nil {
		c, err := ReadDDPMConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.BetaSchedule != "scaled_linear" || c.BetaStart != 0.00085 || c.BetaEnd != 0.012 || c.NumTrainTimesteps != 1000 {
			t.Errorf("config %+v", c)
		}
		ac2, _ := c.AlphasCumprod()
		for i := range ac {
			if ac2[i] != ac[i] {
				t.Fatalf("config alphas_cumprod[%d] = %v, default %v", i, ac2[i], ac[i])
			}
		}
	}
	// "linear" ramps the betas themselves.
	lin := DDPMConfig{BetaStart: 0.0001, BetaEnd: 0.02, BetaSchedule: "linear", NumTrainTimesteps: 1000}
	b, err := lin.Betas()
	if err != nil || b[0] != 0.0001 || b[999] != 0.02 || math.Abs(b[500]-(0.0001+0.0199*500/999)) > 1e-15 {
		t.Errorf("linear betas %v %v", b[:1], err)
	}
}

// TestGoldenSigmas reproduces sigmas.npy of the golden run (3 steps, discrete
// schedule, alphas_cumprod of the checkpoint). The last three values match bit
// for bit. The first, exp(log sigma_999) in float32, is 14.6146431 here (the
// correctly rounded float32 of the exact 14.61464345) and 14.6146441 in the
// golden file, whose generator used a float32 exp with 0.63 ulp error there:
// one ulp (6.5e-8 relative) apart, which is asserted exactly.
func TestGoldenSigmas(t *testing.T) {
	want := []float32{14.614644, 1.6155803, 0.029167537, 0}
	if g, _, err := npy.Read(filepath.Join(goldenDir, "sigmas.npy")); err == nil {
		want = g
	} else {
		t.Log("golden data not present, using values copied from it:", err)
	}
	// The checkpoint's buffer is the float32 rounding of DefaultDDPM's.
	ac, _ := DefaultDDPM().AlphasCumprod()
	for i := range ac {
		ac[i] = float64(float32(ac[i]))
	}
	s, err := NewScheduleFromAlphasCumprod(ac)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Sigmas("discrete", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d sigmas, want %d", len(got), len(want))
	}
	for i := 1; i < len(want); i++ {
		if float32(got[i]) != want[i] {
			t.Errorf("sigma[%d] = %.9g, want %.9g", i, got[i], want[i])
		}
	}
	if g0, w0 := math.Float32bits(float32(got[0])), math.Float32bits(want[0]); g0+1 != w0 {
		t.Errorf("sigma[0] = %.9g, want one float32 ulp below %.9g", got[0], want[0])
	}
	normal, _ := s.Sigmas("normal", 3)
	for i := range normal {
		if normal[i] != got[i] {
			t.Errorf("normal[%d] = %v, discrete %v", i, normal[i], got[i])
		}
	}
	// Timesteps of the golden run (meta.json): 999, 499.5, 0. Sigma at t = 0
	// went through exp(log) in float32, so it maps back to 5e-8;
	// the others are within 1.1e-5 (about float32 rounding of a timestep).
	for i, wantT := range []float64{999, 499.5, 0} {
		if tt := s.SigmaToT(got[i]); math.Abs(tt-wantT) > 2e-5 {
			t.Errorf("SigmaToT(%v) = %v, want %v", got[i], tt, wantT)
		}
	}
}

// TestKarrasExponential pins the 5-step Karras schedule of SD 1.5 (values of
// k-diffusion's get_sigmas_karras, as AUTOMATIC1111 shows them) and a 3-step
// exponential one.
func TestKarrasExponential(t *testing.T) {
	s := sd15Schedule(t)
	for _, c := range []struct {
		name string
		want []float64
	}{
		{"karras", []float64{14.6146421, 4.79654252, 1.27410504, 0.24795167, 0.0291675329, 0}},
		{"exponential", []float64{14.6146421, 1.84003192, 0.231666121, 0.0291675329, 0}},
	} {
		got, err := s.Sigmas(c.name, len(c.want)-1)
		if err != nil {
			t.Fatal(err)
		}
		for i := range c.want {
			if relDiff(got[i], c.want[i]) > 2e-7 {
				t.Errorf("%s[%d] = %.9g, want %.9g", c.name, i, got[i], c.want[i])
			}
		}
	}
	one, _ := s.Sigmas("karras", 1)
	if len(one) != 2 || float32(one[0]) != float32(s.SigmaMax()) || one[1] != 0 {
		t.Errorf("1-step karras %v", one)
	}
}

// TestTimestepConversion: TToSigma interpolates log sigma linearly between
// timesteps and SigmaToT inverts it.
func TestTimestepConversion(t *testing.T) {
	s := sd15Schedule(t)
	ac, _ := DefaultDDPM().AlphasCumprod()
	sig := func(i int) float64 {
		a := float64(float32(ac[i]))
		return math.Sqrt((1 - a) / a)
	}
	for _, tt := range []float64{0, 0.5, 17.25, 499.5, 998.75, 999} {
		lo := math.Floor(tt)
		hi := math.Min(lo+1, 999)
		w := tt - lo
		want := math.Exp((1-w)*math.Log(sig(int(lo))) + w*math.Log(sig(int(hi))))
		got := s.TToSigma(tt)
		if relDiff(got, want) > 3e-7 {
			t.Errorf("TToSigma(%v) = %.9g, want %.9g", tt, got, want)
		}
		if back := s.SigmaToT(got); math.Abs(back-tt) > 1e-3 {
			t.Errorf("SigmaToT(TToSigma(%v)) = %v", tt, back)
		}
	}
	if s.TToSigma(-3) != s.TToSigma(0) || s.TToSigma(5000) != s.TToSigma(999) {
		t.Error("TToSigma does not clamp")
	}
	if s.SigmaToT(1e-9) != 0 || s.SigmaToT(100) != 999 || s.SigmaToT(0) != 0 {
		t.Errorf("SigmaToT clamps: %v %v %v", s.SigmaToT(1e-9), s.SigmaToT(100), s.SigmaToT(0))
	}
}

func TestScheduleErrors(t *testing.T) {
	s := sd15Schedule(t)
	_, err := s.Sigmas("cosine", 10)
	if err == nil || !strings.Contains(err.Error(), `"cosine"`) || !strings.Contains(err.Error(), "karras") {
		t.Errorf("unknown schedule error: %v", err)
	}
	for _, n := range []int{0, -1, MaxSteps + 1} {
		if _, err := s.Sigmas("karras", n); err == nil {
			t.Errorf("%d steps accepted", n)
		}
	}
	bad := [][]float64{{0.9}, {0.9, 0.95}, {1, 0.5}, {0.9, 0}, {0.9, math.NaN()}}
	for _, ac := range bad {
		if _, err := NewScheduleFromAlphasCumprod(ac); err == nil {
			t.Errorf("alphas_cumprod %v accepted", ac)
		}
	}
	for _, raw := range []string{`{"beta_schedule": "squaredcos_cap_v2"}`, `{"beta_start": -1}`, `{`, `{"num_train_timesteps": 1}`} {
		if _, err := NewScheduleFromConfig([]byte(raw)); err == nil {
			t.Errorf("config %s accepted", raw)
		}
	}
}

// TestDDIMUniform: the DDIM timesteps 1 + k*(T/n), largest first, then 0.
func TestDDIMUniform(t *testing.T) {
	s := sd15Schedule(t)
	ac, _ := DefaultDDPM().AlphasCumprod()
	sigmaAt := func(ts int) float64 {
		a := float32(ac[ts])
		return math.Sqrt(float64(float32(1-a) / a))
	}
	for _, c := range []struct {
		n     int
		first int // largest timestep
		count int // nonzero sigmas
	}{{50, 981, 50}, {7, 995, 8}, {3, 667, 3}, {1, 1, 1}, {1000, 999, 999}} {
		got, err := s.Sigmas("ddim_uniform", c.n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != c.count+1 || got[len(got)-1] != 0 {
			t.Fatalf("%d steps: %d sigmas, want %d then 0", c.n, len(got), c.count)
		}
		step := 1000 / c.n
		for k := 0; k < c.count; k++ {
			want := sigmaAt(c.first - k*step)
			if relDiff(got[k], want) > 1e-7 {
				t.Errorf("%d steps: sigma[%d] = %.9g, want sigma(t=%d) = %.9g", c.n, k, got[k], c.first-k*step, want)
			}
		}
	}
}

// TestSGMUniformSimple pins ComfyUI's sgm_uniform and simple schedules on SD
// 1.5, from their definitions worked by hand:
//
//   - sgm_uniform, n steps: timesteps linspace(999, 0, n+1) without the last:
//     n = 3 gives 999, 666, 333; n = 4 gives 999, 749.25, 499.5, 249.75
//     (fractional ones by log-sigma interpolation); n = 1 gives 999.
//   - simple, n steps: sigma table index 999 - floor(i*1000/n): n = 3 gives
//     999, 666 (floor 333.3), 333 (floor 666.7); n = 7 (1000/7 = 142.857)
//     gives 999, 857, 714, 571, 428, 285, 142; n = 1 gives 999.
//
// Expected sigmas come from the closed-form alphas_cumprod rounded to
// float32 (as a checkpoint stores it), tolerance 3e-7 relative.
func TestSGMUniformSimple(t *testing.T) {
	s := sd15Schedule(t)
	ac, _ := DefaultDDPM().AlphasCumprod()
	logSigma := func(ts int) float64 {
		a := float64(float32(ac[ts]))
		return math.Log(math.Sqrt((1 - a) / a))
	}
	sigmaT := func(tt float64) float64 {
		lo := math.Floor(tt)
		w := tt - lo
		hi := math.Min(lo+1, 999)
		return math.Exp((1-w)*logSigma(int(lo)) + w*logSigma(int(hi)))
	}
	for _, c := range []struct {
		name string
		ts   []float64
	}{
		{"sgm_uniform", []float64{999, 666, 333}},
		{"sgm_uniform", []float64{999, 749.25, 499.5, 249.75}},
		{"sgm_uniform", []float64{999}},
		{"simple", []float64{999, 666, 333}},
		{"simple", []float64{999, 857, 714, 571, 428, 285, 142}},
		{"simple", []float64{999}},
	} {
		got, err := s.Sigmas(c.name, len(c.ts))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(c.ts)+1 || got[len(c.ts)] != 0 {
			t.Fatalf("%s %d: %v, want %d sigmas and 0", c.name, len(c.ts), got, len(c.ts))
		}
		for i, tt := range c.ts {
			if want := sigmaT(tt); relDiff(got[i], want) > 3e-7 {
				t.Errorf("%s %d: sigma[%d] = %.9g, want sigma(t=%v) = %.9g", c.name, len(c.ts), i, got[i], tt, want)
			}
		}
	}
	// With 3 steps both are on the same integer timesteps, so they agree up
	// to sgm_uniform's float32 exp(log sigma) (one ulp, as "normal", see
	// TestGoldenSigmas), and start at the model's largest sigma.
	a, _ := s.Sigmas("sgm_uniform", 3)
	b, _ := s.Sigmas("simple", 3)
	for i := range a {
		if relDiff(a[i], b[i]) > 1.2e-7 {
			t.Errorf("3 steps: sgm_uniform[%d] = %v, simple %v", i, a[i], b[i])
		}
	}
	if b[0] != s.SigmaMax() || relDiff(a[0], s.SigmaMax()) > 1.2e-7 {
		t.Errorf("sgm_uniform starts at %v, want SigmaMax %v", a[0], s.SigmaMax())
	}
	// More steps than timesteps: simple repeats sigmas, never increases.
	many, err := s.Sigmas("simple", 2500)
	if err != nil || len(many) != 2501 || many[1] != many[0] || many[2499] != float64(s.sigmas[0]) {
		t.Fatalf("simple 2500: len %d, %v %v ... %v, %v", len(many), many[0], many[1], many[2499], err)
	}
	for i := 1; i < len(many); i++ {
		if many[i] > many[i-1] {
			t.Fatalf("simple 2500 increases at %d", i)
		}
	}
}

// TestEverySchedule: every name in Schedules gives n decreasing positive
// sigmas (non-increasing for ddim_uniform's extra step) ending in 0, from
// SigmaMax (ddim_uniform: timestep 981 for 50 steps) down to no less than
// SigmaMin.
func TestEverySchedule(t *testing.T) {
	s := sd15Schedule(t)
	for _, name := range Schedules {
		got, err := s.Sigmas(name, 50)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 51 || got[50] != 0 {
			t.Errorf("%s: %d sigmas, last %v", name, len(got), got[len(got)-1])
			continue
		}
		for i := 1; i < 50; i++ {
			if !(got[i] < got[i-1]) || got[i] < float64(float32(s.SigmaMin()))*(1-1e-6) {
				t.Errorf("%s: sigma[%d] = %v after %v", name, i, got[i], got[i-1])
			}
		}
		if name != "ddim_uniform" && relDiff(got[0], s.SigmaMax()) > 1.2e-7 { // one float32 ulp
			t.Errorf("%s: starts at %v, want %v", name, got[0], s.SigmaMax())
		}
	}
}
