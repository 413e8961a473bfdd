package sample

import (
	"fmt"
	"math"
	"strings"
)

// Schedules lists the sigma schedule names Sigmas accepts.
var Schedules = []string{"normal", "discrete", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"}

// MaxSteps bounds the number of sampling steps a schedule may have.
const MaxSteps = 10000

// KarrasRho is the rho of the Karras schedule (Karras et al. 2022, eq. 5).
const KarrasRho = 7.0

// Sigmas returns the noise levels of an n-step schedule: n decreasing sigmas
// followed by a final 0, so n+1 values. Schedules:
//
//   - "normal" and "discrete" (the same): timesteps spread evenly from T-1
//     down to 0 (t_i = (T-1)(1 - i/(n-1))), each converted with TToSigma; this
//     is k-diffusion's get_sigmas, AUTOMATIC1111's "Automatic" for SD models.
//   - "karras": sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) -
//     smax^(1/rho)))^rho with rho 7 between the model's SigmaMin and SigmaMax
//     (Karras et al. 2022, eq. 5).
//   - "exponential": evenly spaced in log sigma from SigmaMax to SigmaMin.
//   - "sgm_uniform": ComfyUI's sgm_uniform: n + 1 timesteps spread evenly
//     from T-1 to 0, the last dropped (t_i = (T-1)(1 - i/n)), each converted
//     with TToSigma. (ComfyUI's timesteps pass through float32 linspace; a
//     fractional timestep may differ by a float32 ulp, a relative sigma
//     difference below 1e-6.)
//   - "simple": ComfyUI's simple: every (T/n)-th entry of the model's sigma
//     table from the top, sigma_i = sigma(T-1 - floor(i T/n)) with T/n a
//     float64 quotient, as ComfyUI computes it. More steps than timesteps
//     repeat sigmas (Run skips the repeated steps).
//   - "ddim_uniform": the timesteps of the original DDIM implementation,
//     1 + k*c for c = T/n (integer division) and k = 0, 1, ... while below T,
//     from the largest down, then 0 (as ComfyUI's ddim_uniform; AUTOMATIC1111's
//     DDIM uses the same timesteps). When c does not divide T-1 this gives
//     more than n steps (7 steps: c = 142, 8 timesteps), as those tools do.
//
// Every sigma is rounded to float32, the precision the model sees. A single
// step (n = 1) starts at SigmaMax (ddim_uniform: at timestep 1).
func (s *Schedule) Sigmas(name string, n int) ([]float64, error) {
	if n < 1 || n > MaxSteps {
		return nil, fmt.Errorf("sample: %d steps, want 1..%d", n, MaxSteps)
	}
	smin, smax := s.SigmaMin(), s.SigmaMax()
	out := make([]float64, n+1)
	// frac is i/(n-1), 0 when n == 1.
	frac := func(i int) float64 {
		if n == 1 {
			return 0
		}
		return float64(i) / float64(n-1)
	}
	switch strings.ToLower(name) {
	case "normal", "discrete":
		tmax := float64(len(s.sigmas) - 1)
		for i := 0; i < n; i++ {
			out[i] = s.TToSigma(tmax * (1 - frac(i)))
		}
	case "karras":
		a, b := math.Pow(smax, 1/KarrasRho), math.Pow(smin, 1/KarrasRho)
		for i := 0; i < n; i++ {
			out[i] = float64(float32(math.Pow(a+frac(i)*(b-a), KarrasRho)))
		}
	case "exponential":
		a, b := math.Log(smax), math.Log(smin)
		for i := 0; i < n; i++ {
			out[i] = float64(float32(math.Exp(a + frac(i)*(b-a))))
		}
	case "sgm_uniform":
		tmax := float64(len(s.sigmas) - 1)
		for i := 0; i < n; i++ {
			out[i] = s.TToSigma(tmax * (1 - float64(i)/float64(n)))
		}
	case "simple":
		T := len(s.sigmas)
		ss := float64(T) / float64(n)
		for i := 0; i < n; i++ {
			out[i] = float64(s.sigmas[T-1-int(float64(i)*ss)])
		}
	case "ddim_uniform":
		T := len(s.sigmas)
		c := max(T/n, 1)
		out = out[:0]
		for t := 1 + (T-2)/c*c; t >= 1; t -= c {
			out = append(out, float64(s.sigmas[t]))
		}
		out = append(out, 0)
	default:
		return nil, fmt.Errorf("sample: unknown schedule %q (valid: %s)", name, strings.Join(Schedules, ", "))
	}
	return out, nil
}
