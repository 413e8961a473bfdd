package sample

import (
	"math"
)

// The updates below follow k-diffusion's sample_* functions (Crowson), which
// the samplers of AUTOMATIC1111 and ComfyUI are, in the variables of Karras et
// al. 2022: x at noise level s, d = D(x, s), the ODE direction (x - d) / s,
// and for the DPM-Solver family the half log-SNR lambda = -log s with step
// h = log(s / s') > 0.

// heunStep ("heun"): Heun's method (Karras et al. 2022, Alg. 1 without
// churn): an Euler predictor x2 = x + (x - d)/s (s' - s), a second denoiser
// call at (x2, s'), then x += ((x - d)/s + (x2 - d2)/s')/2 (s' - s). A step to
// s' = 0 is a plain Euler step (one call).
func heunStep(st *state, x, d []float32, s, sNext float64) error {
	if sNext == 0 {
		euler(x, d, s, sNext)
		return nil
	}
	dt := sNext - s
	x2 := make([]float32, len(x))
	for j := range x {
		xj := float64(x[j])
		x2[j] = float32(xj + float64((xj-float64(d[j]))/s*dt))
	}
	d2, err := st.eval(x2, sNext)
	if err != nil {
		return err
	}
	for j := range x {
		xj := float64(x[j])
		g1 := (xj - float64(d[j])) / s
		g2 := (float64(x2[j]) - float64(d2[j])) / sNext
		x[j] = float32(xj + float64((g1+g2)/2*dt))
	}
	return nil
}

// dpm2To takes k-diffusion's DPM-Solver-2 step from s to sTo > 0: an Euler
// step to the log-midpoint sMid = sqrt(s sTo), a denoiser call there, and the
// full step with the midpoint direction: x += (x2 - d2)/sMid (sTo - s).
func dpm2To(st *state, x, d []float32, s, sTo float64) error {
	sMid := math.Sqrt(s * sTo) // exp(lerp(log s, log sTo, 1/2))
	x2 := make([]float32, len(x))
	for j := range x {
		xj := float64(x[j])
		x2[j] = float32(xj + float64((xj-float64(d[j]))/s*(sMid-s)))
	}
	d2, err := st.eval(x2, sMid)
	if err != nil {
		return err
	}
	dt := sTo - s
	for j := range x {
		x[j] = float32(float64(x[j]) + float64((float64(x2[j])-float64(d2[j]))/sMid*dt))
	}
	return nil
}

// dpm2Step ("dpm2", k-diffusion sample_dpm_2, "inspired by DPM-Solver-2 (Lu
// et al. 2022) and Karras et al. 2022, Alg. 2"): the midpoint method in
// log sigma, see dpm2To; a step to s' = 0 is an Euler step.
func dpm2Step(st *state, x, d []float32, s, sNext float64) error {
	if sNext == 0 {
		euler(x, d, s, sNext)
		return nil
	}
	return dpm2To(st, x, d, s, sNext)
}

// dpm2AncestralStep ("dpm2_a", k-diffusion sample_dpm_2_ancestral, eta 1):
// a DPM-Solver-2 step to sigma_down (see ancestralStep), then sigma_up times
// fresh noise; a step to 0 is an Euler step without noise.
func dpm2AncestralStep(st *state, x, d []float32, s, sNext float64) error {
	down, up := ancestralStep(s, sNext)
	if down == 0 {
		euler(x, d, s, down)
		return nil
	}
	if err := dpm2To(st, x, d, s, down); err != nil {
		return err
	}
	st.addNoise(x, up)
	return nil
}

// dpmpp2SAncestralStep ("dpmpp_2s_a", k-diffusion
// sample_dpmpp_2s_ancestral, eta 1): DPM-Solver++(2S) (Lu et al. 2022,
// DPM-Solver++, Alg. 1 with r = 1/2) from s to sigma_down, then sigma_up
// times fresh noise. With h = log(s/sigma_down) and sMid = s e^(-h/2):
// x2 = (sMid/s) x - expm1(-h/2) d, d2 = D(x2, sMid),
// x' = (sigma_down/s) x - expm1(-h) d2. A step to 0 is an Euler step.
func dpmpp2SAncestralStep(st *state, x, d []float32, s, sNext float64) error {
	down, up := ancestralStep(s, sNext)
	if down == 0 {
		euler(x, d, s, down)
		return nil
	}
	h := math.Log(s) - math.Log(down)
	sMid := s * math.Exp(-h/2)
	a, b := sMid/s, -math.Expm1(-h/2)
	x2 := make([]float32, len(x))
	for j := range x {
		x2[j] = float32(float64(a*float64(x[j])) + float64(b*float64(d[j])))
	}
	d2, err := st.eval(x2, sMid)
	if err != nil {
		return err
	}
	a, b = down/s, -math.Expm1(-h)
	for j := range x {
		x[j] = float32(float64(a*float64(x[j])) + float64(b*float64(d2[j])))
	}
	if sNext > 0 {
		st.addNoise(x, up)
	}
	return nil
}

// dpmpp2MSDEStep ("dpmpp_2m_sde", k-diffusion sample_dpmpp_2m_sde with eta 1
// and the midpoint solver): the SDE variant of DPM-Solver++(2M) (Lu et al.
// 2022, DPM-Solver++, sec. 5 and appendix). With h = log(s/s'):
// x' = (s'/s) e^(-h) x + (1 - e^(-2h)) D_i
// + (1/2)(1 - e^(-2h)) (D_i - D_{i-1}) / r + s' sqrt(1 - e^(-2h)) z,
// r = h_{i-1}/h_i, the D_{i-1} term from the second step on, and x' = D_i on a
// step to 0.
//
// k-diffusion draws z from a Brownian tree (BrownianTreeNoiseSampler) so that
// results vary smoothly with the step count; here z is plain seeded Gaussian
// noise, one Randn call on the Run's Source per step, so images differ from
// those tools' for the same seed (the distribution is the same).
// TODO: reproduce torchsde's BrownianTree (seeded from the noise seed) so the
// SDE samplers give AUTOMATIC1111's and ComfyUI's images for a seed.
func dpmpp2MSDEStep(st *state, x, d []float32, s, sNext float64) error {
	if sNext == 0 {
		copy(x, d)
	} else {
		h := math.Log(s) - math.Log(sNext)
		a := sNext / s * math.Exp(-h)
		c := -math.Expm1(-2 * h)
		if st.prevD == nil {
			for j := range x {
				x[j] = float32(float64(a*float64(x[j])) + float64(c*float64(d[j])))
			}
		} else {
			r := (math.Log(st.prevSigma) - math.Log(s)) / h
			k := 0.5 * c / r
			for j := range x {
				dj := float64(d[j])
				x[j] = float32(float64(a*float64(x[j])) + float64(c*dj) + float64(k*(dj-float64(st.prevD[j]))))
			}
		}
		st.addNoise(x, sNext*math.Sqrt(c))
	}
	if st.prevD == nil {
		st.prevD = make([]float32, len(d))
	}
	copy(st.prevD, d)
	st.prevSigma = s
	return nil
}

// dpmpp3MSDEStep ("dpmpp_3m_sde", k-diffusion sample_dpmpp_3m_sde with eta 1):
// the third-order multistep DPM-Solver++ SDE. With h = log(s/s'),
// g = 2h (h (eta + 1)), phi2 = expm1(-g)/g + 1, phi3 = phi2/g - 1/2:
// x' = e^(-g) x + (1 - e^(-g)) D_i + phi2 d1 - phi3 d2 + s' sqrt(1 - e^(-2h)) z,
// where, with r0 = h_{i-1}/h and r1 = h_{i-2}/h, the divided differences are
// d1_0 = (D_i - D_{i-1})/r0, d1_1 = (D_{i-1} - D_{i-2})/r1,
// d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1), d2 = (d1_0 - d1_1)/(r0 + r1).
// The first step uses no history, the second only d1 = d1_0 (d2 = 0); a step
// to 0 gives x' = D_i. The noise z is plain seeded Gaussian noise, not
// k-diffusion's Brownian tree (see dpmpp2MSDEStep).
func dpmpp3MSDEStep(st *state, x, d []float32, s, sNext float64) error {
	if sNext == 0 {
		copy(x, d)
	} else {
		h := math.Log(s) - math.Log(sNext)
		g := 2 * h
		a, c := math.Exp(-g), -math.Expm1(-g)
		phi2 := math.Expm1(-g)/g + 1
		phi3 := phi2/g - 0.5
		switch len(st.hist) {
		case 0:
			for j := range x {
				x[j] = float32(float64(a*float64(x[j])) + float64(c*float64(d[j])))
			}
		case 1:
			r := (math.Log(st.histSigma[0]) - math.Log(s)) / h
			d1 := st.hist[0]
			for j := range x {
				dj := float64(d[j])
				diff := (dj - float64(d1[j])) / r
				x[j] = float32(float64(a*float64(x[j])) + float64(c*dj) + float64(phi2*diff))
			}
		default:
			r0 := (math.Log(st.histSigma[0]) - math.Log(s)) / h
			r1 := (math.Log(st.histSigma[1]) - math.Log(st.histSigma[0])) / h
			p1, p2 := st.hist[0], st.hist[1]
			for j := range x {
				dj := float64(d[j])
				d10 := (dj - float64(p1[j])) / r0
				d11 := (float64(p1[j]) - float64(p2[j])) / r1
				dd1 := d10 + float64((d10-d11)*r0)/(r0+r1)
				dd2 := (d10 - d11) / (r0 + r1)
				x[j] = float32(float64(a*float64(x[j])) + float64(c*dj) + float64(phi2*dd1) - float64(phi3*dd2))
			}
		}
		st.addNoise(x, sNext*math.Sqrt(-math.Expm1(-2*h)))
	}
	st.push(d, s, 2)
	return nil
}

// lcmStep ("lcm", k-diffusion/ComfyUI sample_lcm): the multistep sampling of
// consistency models as LCM uses it (Luo et al. 2023, Alg. 1; Song et al.
// 2023): jump to the model's clean estimate, x' = D(x, s), then re-noise to
// s' with fresh noise, x' += s' z (no noise on the step to 0).
func lcmStep(st *state, x, d []float32, _, sNext float64) error {
	copy(x, d)
	if sNext > 0 {
		st.addNoise(x, sNext)
	}
	return nil
}
