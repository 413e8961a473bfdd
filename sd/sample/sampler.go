package sample

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/gosd/gosd/sd/rng"
)

// Denoiser estimates the clean latent from x at noise level sigma:
// x: [N] f32 -> denoised [N] f32, N = len(x). The pipeline implements it with
// the UNet (input scaled by 1/sqrt(sigma^2+1), eps prediction, classifier-free
// guidance, denoised = x - sigma*eps). It must not keep or modify x.
type Denoiser func(ctx context.Context, x []float32, sigma float64) (denoised []float32, err error)

// Samplers lists the sampler names Run accepts, with the names AUTOMATIC1111
// and ComfyUI users know them by (k-diffusion's sample_* functions with their
// default arguments: eta 1 for the ancestral and SDE ones, s_noise 1, no
// churn). Each update is documented on its step function:
//
//   - "euler": Euler's method on the probability-flow ODE (Karras et al. 2022).
//   - "euler_a": Euler ancestral (k-diffusion).
//   - "heun": Heun's second-order method (Karras et al. 2022, Alg. 1), 2
//     denoiser calls per step but the last.
//   - "dpm2": DPM-Solver-2 with a log-midpoint (k-diffusion after Lu et al.
//     2022 and Karras et al. 2022, Alg. 2), 2 calls per step but the last.
//   - "dpm2_a": the same, ancestral.
//   - "dpmpp_2s_a": DPM-Solver++(2S) ancestral (Lu et al. 2022, DPM-Solver++),
//     2 calls per step but the last.
//   - "dpmpp_2m": DPM-Solver++(2M) (Lu et al. 2022, DPM-Solver++, Alg. 2).
//   - "dpmpp_2m_sde": DPM-Solver++(2M) SDE, midpoint solver, eta 1.
//   - "dpmpp_3m_sde": DPM-Solver++(3M) SDE, eta 1.
//   - "lcm": the multistep consistency sampler of LCM (Luo et al. 2023).
//   - "ddim": DDIM with eta 0 (Song et al. 2020), which is the Euler update.
//   - "unipc": UniPC, bh2 variant, order 2 (Zhao et al. 2023), as diffusers'
//     UniPCMultistepScheduler defaults.
//
// The ancestral and SDE samplers and "lcm" draw fresh noise from the Source
// passed to Run; the others are deterministic.
var Samplers = []string{"euler", "euler_a", "heun", "dpm2", "dpm2_a", "dpmpp_2s_a", "dpmpp_2m",
	"dpmpp_2m_sde", "dpmpp_3m_sde", "lcm", "ddim", "unipc"}

// samplerDef is how Run runs one sampler.
type samplerDef struct {
	step  stepFunc
	noisy bool // draws noise, so needs a Source
}

var samplerDefs = map[string]samplerDef{
	"euler":        {eulerStep, false},
	"euler_a":      {eulerAncestralStep, true},
	"heun":         {heunStep, false},
	"dpm2":         {dpm2Step, false},
	"dpm2_a":       {dpm2AncestralStep, true},
	"dpmpp_2s_a":   {dpmpp2SAncestralStep, true},
	"dpmpp_2m":     {dpmpp2MStep, false},
	"dpmpp_2m_sde": {dpmpp2MSDEStep, true},
	"dpmpp_3m_sde": {dpmpp3MSDEStep, true},
	"lcm":          {lcmStep, true},
	"ddim":         {eulerStep, false},
	"unipc":        {unipcStep(2), false},
}

// ErrNoNoise is returned by Run when a sampler that draws noise gets no
// noise source.
var ErrNoNoise = errors.New("sampler needs a noise source")

// Run integrates x from sigmas[0] down to sigmas[len-1] with the named sampler
// (one of Samplers, any case) and returns the result as a new slice (x is not
// modified). x: [N] f32 at noise level sigmas[0], that is already scaled by
// sigmas[0]. sigmas: the schedule, non-increasing, with every value but the
// last > 0 (as Sigmas returns it); len(sigmas)-1 steps are taken (a step
// between two equal sigmas changes nothing and calls nothing). Each step
// calls denoise once at sigmas[i]; heun (at sigmas[i+1]), dpm2, dpm2_a and
// dpmpp_2s_a (at an intermediate sigma) call it a second time, except on a
// step to sigma 0.
//
// noise feeds the samplers that draw noise (ancestral, SDE, lcm), which take
// N values with one Randn call per step that adds noise (none on a step to
// sigma 0); pass the Source that produced the starting noise to continue its
// stream as PyTorch-based tools do. Deterministic samplers ignore it.
//
// ctx is checked before each denoiser call; when it is done Run returns
// ctx.Err() (wrapped). progress, if not nil, is called after each step with
// the number of steps done and the total.
func Run(ctx context.Context, name string, x []float32, sigmas []float64, denoise Denoiser,
	noise rng.Source, progress func(step, total int)) ([]float32, error) {
	def, ok := samplerDefs[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("sample: unknown sampler %q (valid: %s)", name, strings.Join(Samplers, ", "))
	}
	if def.noisy && noise == nil {
		return nil, fmt.Errorf("sample: %s: %w", name, ErrNoNoise)
	}
	if denoise == nil {
		return nil, errors.New("sample: nil denoiser")
	}
	if err := checkSigmas(sigmas); err != nil {
		return nil, err
	}
	out := append([]float32(nil), x...)
	total := len(sigmas) - 1
	st := &state{total: total, noise: noise}
	st.eval = func(xe []float32, sigma float64) ([]float32, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, err := denoise(ctx, xe, sigma)
		if err != nil {
			return nil, err
		}
		if len(d) != len(xe) {
			return nil, fmt.Errorf("denoiser returned %d values for %d", len(d), len(xe))
		}
		return d, nil
	}
	for i := 0; i < total; i++ {
		if sigmas[i+1] == sigmas[i] { // nothing to integrate; multistep history stays as it is
			st.i++
			if progress != nil {
				progress(i+1, total)
			}
			continue
		}
		d, err := st.eval(out, sigmas[i])
		if err == nil {
			err = def.step(st, out, d, sigmas[i], sigmas[i+1])
		}
		if err != nil {
			return nil, fmt.Errorf("sample: step %d of %d: %w", i+1, total, err)
		}
		st.i++
		if progress != nil {
			progress(i+1, total)
		}
	}
	return out, nil
}

// checkSigmas accepts a finite, non-increasing schedule whose values before the
// last are > 0.
func checkSigmas(sigmas []float64) error {
	if len(sigmas) == 0 {
		return errors.New("sample: empty sigma schedule")
	}
	for i, s := range sigmas {
		switch {
		case math.IsNaN(s) || math.IsInf(s, 0) || s < 0:
			return fmt.Errorf("sample: sigmas[%d] = %v, want finite and >= 0", i, s)
		case i < len(sigmas)-1 && s == 0:
			return fmt.Errorf("sample: sigmas[%d] = 0 before the last step", i)
		case i > 0 && s > sigmas[i-1]:
			return fmt.Errorf("sample: sigmas increase at %d (%v > %v)", i, s, sigmas[i-1])
		}
	}
	return nil
}

// state carries what a sampler keeps between steps and what a step may use
// besides x and the denoised value.
type state struct {
	i, total int // index of the current step, number of steps
	// eval calls the denoiser (for samplers with two calls per step).
	eval  func(x []float32, sigma float64) ([]float32, error)
	noise rng.Source // nil for deterministic samplers

	prevD     []float32 // denoised of the previous step
	prevSigma float64   // sigma of the previous step

	// Multistep history, newest first: denoised values and their sigmas.
	hist      [][]float32
	histSigma []float64

	// UniPC: the sample the last predictor started from, its order, and the
	// number of steps taken (for the warm-up orders).
	last      []float32
	lastOrder int
}

// push records d (copied) and its sigma as the newest history entry, keeping
// at most keep entries.
func (st *state) push(d []float32, sigma float64, keep int) {
	var buf []float32
	if len(st.hist) >= keep {
		buf = st.hist[keep-1]
		st.hist, st.histSigma = st.hist[:keep-1], st.histSigma[:keep-1]
	}
	if len(buf) != len(d) {
		buf = make([]float32, len(d))
	}
	copy(buf, d)
	st.hist = append([][]float32{buf}, st.hist...)
	st.histSigma = append([]float64{sigma}, st.histSigma...)
}

// addNoise draws len(x) unit normals from st.noise and adds scale times them
// to x.
func (st *state) addNoise(x []float32, scale float64) {
	z := st.noise.Randn(len(x))
	for j := range x {
		x[j] = float32(float64(x[j]) + float64(float64(z[j])*scale))
	}
}

// stepFunc advances x in place from sigma s to sNext given denoised d = D(x, s).
// Updates are computed per element in float64 and rounded once; the explicit
// float64 conversions keep the compiler from fusing multiply-adds, so results
// are the same on every architecture.
type stepFunc func(st *state, x, d []float32, s, sNext float64) error

// eulerStep ("euler", "ddim"): x += (x - d) / s * (sNext - s), Euler's method
// on the probability-flow ODE dx/ds = (x - D(x, s)) / s (Karras et al. 2022,
// eq. 4 and Alg. 1 without churn).
//
// DDIM with eta 0 (Song et al. 2020, eq. 12) is the same update: with x =
// x_ddpm / sqrt(a) and s = sqrt((1-a)/a), x_ddpm' = sqrt(a') x0 + sqrt(1-a')
// eps becomes x' = D + s' (x - D) / s (Song et al. 2020, eq. 14; Karras et al.
// 2022, sec. 3). The DDIM timesteps of the original implementation are a
// schedule choice, not a sampler one: the "ddim_uniform" schedule. (The
// original's last step stops at timestep 0, sigma 0.029, instead of 0.)
func eulerStep(_ *state, x, d []float32, s, sNext float64) error {
	euler(x, d, s, sNext)
	return nil
}

// euler moves x from s to sTo along the direction (x - d) / s.
func euler(x, d []float32, s, sTo float64) {
	dt := sTo - s
	for j := range x {
		xj := float64(x[j])
		x[j] = float32(xj + float64((xj-float64(d[j]))/s*dt))
	}
}

// ancestralStep returns k-diffusion's (sigma_down, sigma_up) for eta 1:
// sigma_up = min(s', sqrt(s'^2 (s^2 - s'^2) / s^2)), sigma_down =
// sqrt(s'^2 - sigma_up^2), so that a step to sigma_down plus sigma_up times
// fresh noise lands at noise level s'.
func ancestralStep(s, sNext float64) (down, up float64) {
	if sNext == 0 {
		return 0, 0
	}
	up = math.Min(sNext, math.Sqrt(sNext*sNext*(s*s-sNext*sNext)/(s*s)))
	return math.Sqrt(sNext*sNext - up*up), up
}

// eulerAncestralStep ("euler_a", k-diffusion sample_euler_ancestral): an
// Euler step to sigma_down, then sigma_up times fresh unit noise (none on the
// step to 0).
func eulerAncestralStep(st *state, x, d []float32, s, sNext float64) error {
	down, up := ancestralStep(s, sNext)
	euler(x, d, s, down)
	if sNext > 0 {
		st.addNoise(x, up)
	}
	return nil
}

// dpmpp2MStep ("dpmpp_2m"): DPM-Solver++(2M) (Lu et al. 2022, DPM-Solver++,
// Alg. 2) in lambda = -log s, as k-diffusion's sample_dpmpp_2m:
// x' = (s'/s) x + (1 - s'/s) D~, D~ = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1},
// r = h_{i-1}/h_i, h = log(s/s'); first-order (D~ = D_i) on the first step,
// and x' = D_i on a step to s' = 0.
func dpmpp2MStep(st *state, x, d []float32, s, sNext float64) error {
	if sNext == 0 {
		copy(x, d)
	} else {
		ratio := sNext / s                 // sigma_fn(t_next) / sigma_fn(t)
		h := math.Log(s) - math.Log(sNext) // t_next - t, t = -log sigma
		c := -math.Expm1(-h)               // 1 - sNext/s
		if st.prevD == nil {
			for j := range x {
				x[j] = float32(float64(ratio*float64(x[j])) + float64(c*float64(d[j])))
			}
		} else {
			hLast := math.Log(st.prevSigma) - math.Log(s)
			r := hLast / h
			a, b := 1+1/(2*r), 1/(2*r)
			for j := range x {
				dd := float64(a*float64(d[j])) - float64(b*float64(st.prevD[j]))
				x[j] = float32(float64(ratio*float64(x[j])) + float64(c*dd))
			}
		}
	}
	if st.prevD == nil {
		st.prevD = make([]float32, len(d))
	}
	copy(st.prevD, d)
	st.prevSigma = s
	return nil
}
