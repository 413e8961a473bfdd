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

// Samplers lists the sampler names Run accepts.
var Samplers = []string{"euler", "euler_a", "dpmpp_2m", "ddim"}

// ErrNoNoise is returned by Run when an ancestral sampler gets no noise source.
var ErrNoNoise = errors.New("sampler needs a noise source")

// Run integrates x from sigmas[0] down to sigmas[len-1] with the named sampler
// and returns the result as a new slice (x is not modified). x: [N] f32 at
// noise level sigmas[0], that is already scaled by sigmas[0]. sigmas: the
// schedule, non-increasing, with every value but the last > 0 (as Sigmas
// returns it); len(sigmas)-1 steps are taken, each calling denoise once.
//
// noise feeds the ancestral sampler (euler_a), which draws N values with one
// Randn call per step; pass the Source that produced the starting noise to
// continue its stream as PyTorch-based tools do. Other samplers ignore it.
//
// ctx is checked before each step; when it is done Run returns ctx.Err()
// (wrapped). progress, if not nil, is called after each step with the number of
// steps done and the total.
//
// Samplers (k-diffusion's sample_* functions with default arguments):
//
//   - "euler": x += (x - D(x, s)) / s * (s' - s), Euler's method on the
//     probability-flow ODE dx/ds = (x - D(x, s)) / s (Karras et al. 2022, eq. 4
//     and Alg. 1 without churn).
//   - "euler_a": Euler ancestral, eta 1: step to s_down = sqrt(s'^2 - s_up^2)
//     with s_up = min(s', sqrt(s'^2 (s^2 - s'^2) / s^2)), then add s_up times
//     fresh unit noise (k-diffusion get_ancestral_step).
//   - "dpmpp_2m": DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in lambda =
//     -log s: x' = (s'/s) x + (1 - s'/s) D~, D~ = (1 + 1/(2r)) D_i - 1/(2r)
//     D_{i-1}, r = h_{i-1}/h_i, h = log(s/s'); first-order (D~ = D_i) on the
//     first step and on a step to s' = 0.
//   - "ddim": deterministic DDIM, eta 0 (Song et al. 2020, eq. 12). With
//     x = x_ddpm / sqrt(a) and s = sqrt((1-a)/a), the DDIM update
//     x_ddpm' = sqrt(a') x0 + sqrt(1-a') eps becomes x' = D + s' (x - D) / s,
//     which is algebraically the Euler step above (Song et al. 2020, eq. 14;
//     Karras et al. 2022, sec. 3). The DDIM timesteps of the original
//     implementation are a schedule choice, not a sampler one: the
//     "ddim_uniform" schedule. (The original's last step stops at timestep 0,
//     sigma 0.029, instead of 0.)
func Run(ctx context.Context, name string, x []float32, sigmas []float64, denoise Denoiser,
	noise rng.Source, progress func(step, total int)) ([]float32, error) {
	var step stepFunc
	switch strings.ToLower(name) {
	case "euler", "ddim":
		step = eulerStep
	case "euler_a":
		if noise == nil {
			return nil, fmt.Errorf("sample: %s: %w", name, ErrNoNoise)
		}
		step = func(st *state, x, d []float32, s, sNext float64) { eulerAncestralStep(st, x, d, s, sNext, noise) }
	case "dpmpp_2m":
		step = dpmpp2MStep
	default:
		return nil, fmt.Errorf("sample: unknown sampler %q (valid: %s)", name, strings.Join(Samplers, ", "))
	}
	if denoise == nil {
		return nil, errors.New("sample: nil denoiser")
	}
	if err := checkSigmas(sigmas); err != nil {
		return nil, err
	}
	out := append([]float32(nil), x...)
	total := len(sigmas) - 1
	st := &state{}
	for i := 0; i < total; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("sample: step %d of %d: %w", i+1, total, err)
		}
		d, err := denoise(ctx, out, sigmas[i])
		if err != nil {
			return nil, fmt.Errorf("sample: step %d of %d: %w", i+1, total, err)
		}
		if len(d) != len(out) {
			return nil, fmt.Errorf("sample: step %d: denoiser returned %d values for %d", i+1, len(d), len(out))
		}
		step(st, out, d, sigmas[i], sigmas[i+1])
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

// state carries what a multistep sampler keeps between steps.
type state struct {
	i         int       // index of the current step
	prevD     []float32 // denoised of the previous step
	prevSigma float64   // sigma of the previous step
}

// stepFunc advances x in place from sigma s to sNext given denoised d = D(x, s).
// Updates are computed per element in float64 and rounded once; the explicit
// float64 conversions keep the compiler from fusing multiply-adds, so results
// are the same on every architecture.
type stepFunc func(st *state, x, d []float32, s, sNext float64)

// eulerStep: x += (x - d) / s * (sNext - s), per element in float64.
func eulerStep(_ *state, x, d []float32, s, sNext float64) {
	dt := sNext - s
	for j := range x {
		xj := float64(x[j])
		x[j] = float32(xj + float64((xj-float64(d[j]))/s*dt))
	}
}

// ancestralStep returns k-diffusion's (sigma_down, sigma_up) for eta 1.
func ancestralStep(s, sNext float64) (down, up float64) {
	if sNext == 0 {
		return 0, 0
	}
	up = math.Min(sNext, math.Sqrt(sNext*sNext*(s*s-sNext*sNext)/(s*s)))
	return math.Sqrt(sNext*sNext - up*up), up
}

func eulerAncestralStep(_ *state, x, d []float32, s, sNext float64, noise rng.Source) {
	down, up := ancestralStep(s, sNext)
	dt := down - s
	for j := range x {
		xj := float64(x[j])
		x[j] = float32(xj + float64((xj-float64(d[j]))/s*dt))
	}
	if sNext > 0 {
		z := noise.Randn(len(x))
		for j := range x {
			x[j] = float32(float64(x[j]) + float64(float64(z[j])*up))
		}
	}
}

func dpmpp2MStep(st *state, x, d []float32, s, sNext float64) {
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
}
