// Package sample holds the noise schedules and samplers of gosd in the
// k-diffusion formulation (Karras et al., "Elucidating the Design Space of
// Diffusion-Based Generative Models", 2022; Crowson's k-diffusion library): a
// latent x at noise level sigma is data plus sigma times unit Gaussian noise,
// a denoiser D(x, sigma) estimates the data, and samplers integrate from the
// largest sigma down to 0.
//
// The DDPM models of Stable Diffusion are trained on discrete timesteps t =
// 0..999 with cumulative signal fractions alphas_cumprod[t]; in this
// formulation timestep t has sigma(t) = sqrt((1 - a_t) / a_t) and the DDPM
// latent is x / sqrt(1 + sigma^2).
package sample

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
)

// DDPMConfig describes a DDPM beta schedule, as in a diffusers
// scheduler_config.json.
type DDPMConfig struct {
	BetaStart         float64   `json:"beta_start"`
	BetaEnd           float64   `json:"beta_end"`
	BetaSchedule      string    `json:"beta_schedule"` // "scaled_linear" or "linear"
	NumTrainTimesteps int       `json:"num_train_timesteps"`
	TrainedBetas      []float64 `json:"trained_betas"` // overrides the others when set
}

// DefaultDDPM is Stable Diffusion's schedule (1.x, 2.x and XL alike): scaled
// linear betas from 0.00085 to 0.012 over 1000 timesteps.
func DefaultDDPM() DDPMConfig {
	return DDPMConfig{BetaStart: 0.00085, BetaEnd: 0.012, BetaSchedule: "scaled_linear", NumTrainTimesteps: 1000}
}

// ParseDDPMConfig reads a diffusers scheduler_config.json. Fields it lacks keep
// DefaultDDPM's values; empty input gives DefaultDDPM.
func ParseDDPMConfig(raw []byte) (DDPMConfig, error) {
	c := DefaultDDPM()
	if len(strings.TrimSpace(string(raw))) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("sample: scheduler config: %w", err)
	}
	return c, nil
}

// ReadDDPMConfig reads a diffusers scheduler_config.json file.
func ReadDDPMConfig(path string) (DDPMConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return DDPMConfig{}, fmt.Errorf("sample: %w", err)
	}
	return ParseDDPMConfig(raw)
}

// Betas returns the per-timestep noise variances, in float64 as the original
// LDM code (register_schedule) computes them: "scaled_linear" squares a linear
// ramp from sqrt(BetaStart) to sqrt(BetaEnd), "linear" ramps the betas
// themselves.
func (c DDPMConfig) Betas() ([]float64, error) {
	if len(c.TrainedBetas) > 0 {
		for i, b := range c.TrainedBetas {
			if !(b > 0 && b < 1) {
				return nil, fmt.Errorf("sample: trained_betas[%d] = %v, want 0 < beta < 1", i, b)
			}
		}
		return append([]float64(nil), c.TrainedBetas...), nil
	}
	n := c.NumTrainTimesteps
	if n < 2 || n > 1<<20 {
		return nil, fmt.Errorf("sample: num_train_timesteps %d, want 2..%d", n, 1<<20)
	}
	if !(c.BetaStart > 0 && c.BetaEnd > 0 && c.BetaStart < 1 && c.BetaEnd < 1) {
		return nil, fmt.Errorf("sample: beta_start %v, beta_end %v, want both in (0, 1)", c.BetaStart, c.BetaEnd)
	}
	lo, hi := c.BetaStart, c.BetaEnd
	square := false
	switch c.BetaSchedule {
	case "scaled_linear", "":
		lo, hi, square = math.Sqrt(lo), math.Sqrt(hi), true
	case "linear":
	default:
		return nil, fmt.Errorf("sample: beta_schedule %q not supported (valid: scaled_linear, linear)", c.BetaSchedule)
	}
	betas := make([]float64, n)
	for i := range betas {
		v := lo + (hi-lo)*float64(i)/float64(n-1)
		if square {
			v *= v
		}
		betas[i] = v
	}
	return betas, nil
}

// AlphasCumprod returns a_t = prod_{s<=t} (1 - beta_s), in float64.
func (c DDPMConfig) AlphasCumprod() ([]float64, error) {
	betas, err := c.Betas()
	if err != nil {
		return nil, err
	}
	ac := make([]float64, len(betas))
	p := 1.0
	for i, b := range betas {
		p *= 1 - b
		ac[i] = p
	}
	return ac, nil
}

// Schedule is a model's noise levels: sigma for each training timestep and the
// conversions between sigma and fractional timesteps.
//
// Arithmetic follows k-diffusion's DiscreteSchedule on PyTorch float32 buffers,
// so that schedules match AUTOMATIC1111's: alphas_cumprod is rounded to
// float32 (as checkpoints store it), sigma_t = sqrt((1-a)/a) and log sigma_t
// are float32, and interpolation happens on log sigma in float32.
type Schedule struct {
	sigmas    []float32 // sigma of timestep t, increasing with t
	logSigmas []float32
}

// NewScheduleFromAlphasCumprod builds a Schedule from a model's alphas_cumprod
// buffer ([T] values, decreasing, in (0, 1)); prefer a checkpoint's own
// buffer when it has one.
func NewScheduleFromAlphasCumprod(ac []float64) (*Schedule, error) {
	if len(ac) < 2 {
		return nil, fmt.Errorf("sample: alphas_cumprod has %d values, want at least 2", len(ac))
	}
	s := &Schedule{sigmas: make([]float32, len(ac)), logSigmas: make([]float32, len(ac))}
	for i, a64 := range ac {
		a := float32(a64)
		if !(a > 0 && a < 1) {
			return nil, fmt.Errorf("sample: alphas_cumprod[%d] = %v, want 0 < a < 1", i, a64)
		}
		if i > 0 && a > float32(ac[i-1]) {
			return nil, fmt.Errorf("sample: alphas_cumprod increases at %d (%v > %v)", i, a64, ac[i-1])
		}
		q := float32(1-a) / a
		s.sigmas[i] = float32(math.Sqrt(float64(q)))
		s.logSigmas[i] = float32(math.Log(float64(s.sigmas[i])))
	}
	return s, nil
}

// NewScheduleFromConfig builds a Schedule from the bytes of a diffusers
// scheduler_config.json; nil or empty gives Stable Diffusion's default.
func NewScheduleFromConfig(raw []byte) (*Schedule, error) {
	c, err := ParseDDPMConfig(raw)
	if err != nil {
		return nil, err
	}
	ac, err := c.AlphasCumprod()
	if err != nil {
		return nil, err
	}
	return NewScheduleFromAlphasCumprod(ac)
}

// Timesteps is the number of training timesteps T.
func (s *Schedule) Timesteps() int { return len(s.sigmas) }

// SigmaMin is sigma at timestep 0.
func (s *Schedule) SigmaMin() float64 { return float64(s.sigmas[0]) }

// SigmaMax is sigma at timestep T-1.
func (s *Schedule) SigmaMax() float64 { return float64(s.sigmas[len(s.sigmas)-1]) }

// TToSigma is sigma at a fractional timestep t in [0, T-1] (clamped):
// exp((1-w) log sigma_floor(t) + w log sigma_ceil(t)) with w = t - floor(t),
// in float32 like k-diffusion's DiscreteSchedule.t_to_sigma.
func (s *Schedule) TToSigma(t float64) float64 {
	tf := float32(t)
	if !(tf > 0) { // also NaN
		tf = 0
	}
	if last := float32(len(s.sigmas) - 1); tf > last {
		tf = last
	}
	lo := int(tf)
	hi := lo
	if float32(lo) < tf {
		hi = lo + 1
	}
	w := tf - float32(lo)
	ls := float32((1-w)*s.logSigmas[lo]) + float32(w*s.logSigmas[hi])
	return float64(float32(math.Exp(float64(ls))))
}

// SigmaToT is the fractional timestep of sigma, inverting TToSigma by linear
// interpolation in log sigma between the two neighbouring timesteps (as
// k-diffusion's sigma_to_t); sigmas outside [SigmaMin, SigmaMax] clamp to 0 or
// T-1. Computed in float64 from the float32 table.
func (s *Schedule) SigmaToT(sigma float64) float64 {
	if !(sigma > 0) {
		return 0
	}
	ls := math.Log(sigma)
	n := len(s.logSigmas)
	// low: last index whose log sigma <= ls, within [0, n-2].
	lo := 0
	for lo < n-2 && float64(s.logSigmas[lo+1]) <= ls {
		lo++
	}
	a, b := float64(s.logSigmas[lo]), float64(s.logSigmas[lo+1])
	w := 0.0
	if b != a {
		w = (ls - a) / (b - a)
	}
	w = math.Max(0, math.Min(1, w))
	return float64(lo) + w
}
