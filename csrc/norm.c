/* norm.c - group normalisation (with optional fused SiLU) and layer normalisation. */
#include "internal.h"

/* Sum and sum of squared deviations from `shift` over n values, in 16 lanes. */
SDI_DUAL(moments, (const float *x, int64_t n, float shift, double *sum, double *sq), {
	double s = 0, q = 0;
	for (int64_t i0 = 0; i0 < n; i0 += 4096) {
		int64_t e = n - i0 < 4096 ? n - i0 : 4096;
		float as[16] = {0}, aq[16] = {0};
		int64_t i = 0;
		for (; i + 16 <= e; i += 16)
			for (int l = 0; l < 16; l++) {
				float v = x[i0 + i + l] - shift;
				as[l] += v;
				aq[l] += v * v;
			}
		for (; i < e; i++) {
			float v = x[i0 + i] - shift;
			as[0] += v;
			aq[0] += v * v;
		}
		for (int l = 0; l < 16; l++)
			s += as[l], q += aq[l];
	}
	*sum = s, *sq = q;
})

/* y = (x - m)*a + b, then SiLU when silu is set. */
SDI_DUAL(affine, (float *y, const float *x, int64_t n, float m, float a, float b, int silu), {
	if (silu)
		for (int64_t i = 0; i < n; i++)
			y[i] = sdi_silu((x[i] - m) * a + b);
	else
		for (int64_t i = 0; i < n; i++)
			y[i] = (x[i] - m) * a + b;
})

/* y = (x - mean)*inv*g + b per element of a row. */
SDI_DUAL(affine_row, (float *y, const float *x, int64_t n, float mean, float inv, const float *g,
		      const float *b), {
	for (int64_t i = 0; i < n; i++)
		y[i] = (x[i] - mean) * inv * g[i] + b[i];
})

/*
 * mean_var computes mean and biased variance in two passes: a first pass for
 * the mean, a second for squared deviations from it (accurate for large
 * offsets, unlike E[x²] - E[x]²).
 */
static void mean_var(void (*mom)(const float *, int64_t, float, double *, double *),
		     const float *x, int64_t n, double *mean, double *var)
{
	double s, q;
	mom(x, n, 0.0f, &s, &q);
	double mu = s / (double)n;
	mom(x, n, (float)mu, &s, &q);
	/* s is the sum of (x - mu_f32); correct for the rounding of mu. */
	double d = s / (double)n;
	*mean = mu + d;
	*var = q / (double)n - d * d;
	if (*var < 0)
		*var = 0;
}

int sd_group_norm(float *y, const float *x, const void *gamma, int gdt, const void *beta,
		  int bdt, int64_t batch, int64_t c, int64_t s, int64_t groups, float eps,
		  int silu, char *msg, int msglen)
{
	if (batch < 0 || c < 1 || s < 1 || groups < 1 || c % groups != 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG,
				"group_norm: bad sizes b=%lld c=%lld s=%lld groups=%lld",
				(long long)batch, (long long)c, (long long)s, (long long)groups);
	if (!sdi_dtype_ok(gdt) || !sdi_dtype_ok(bdt))
		return sdi_fail(msg, msglen, SD_ERR_DTYPE, "group_norm: bad dtype %d/%d", gdt, bdt);
	if (batch == 0)
		return SD_OK;
	if (!y || !x || !gamma || !beta)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "group_norm: null pointer");
	float *g = sdi_vec_f32(gamma, gdt, c), *b = sdi_vec_f32(beta, bdt, c);
	if (!g || !b) {
		free(g), free(b);
		return sdi_fail(msg, msglen, SD_ERR_NOMEM, "group_norm: out of memory");
	}
	int64_t cg = c / groups, jobs = batch * groups;
	int nt = SDI_NT(batch * c * s);
	void (*mom)(const float *, int64_t, float, double *, double *) = SDI_PICK(moments);
	void (*aff)(float *, const float *, int64_t, float, float, float, int) = SDI_PICK(affine);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(dynamic, 1) nowait
		for (int64_t j = 0; j < jobs; j++) {
			int64_t n = j / groups, gi = j % groups;
			int64_t base = (n * c + gi * cg) * s;
			double mean, var;
			mean_var(mom, x + base, cg * s, &mean, &var);
			double inv = 1.0 / sqrt(var + (double)eps);
			for (int64_t ci = 0; ci < cg; ci++) {
				int64_t ch = gi * cg + ci;
				aff(y + base + ci * s, x + base + ci * s, s, (float)mean, (float)(inv * g[ch]),
				    b[ch], silu);
			}
		}
		sdi_work_end(w0);
	}
	free(g), free(b);
	return SD_OK;
}

int sd_layer_norm(float *y, const float *x, const void *gamma, int gdt, const void *beta,
		  int bdt, int64_t rows, int64_t c, float eps, char *msg, int msglen)
{
	if (rows < 0 || c < 1)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "layer_norm: bad sizes rows=%lld c=%lld",
				(long long)rows, (long long)c);
	if (!sdi_dtype_ok(gdt) || !sdi_dtype_ok(bdt))
		return sdi_fail(msg, msglen, SD_ERR_DTYPE, "layer_norm: bad dtype %d/%d", gdt, bdt);
	if (rows == 0)
		return SD_OK;
	if (!y || !x || !gamma || !beta)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "layer_norm: null pointer");
	float *g = sdi_vec_f32(gamma, gdt, c), *b = sdi_vec_f32(beta, bdt, c);
	if (!g || !b) {
		free(g), free(b);
		return sdi_fail(msg, msglen, SD_ERR_NOMEM, "layer_norm: out of memory");
	}
	int nt = SDI_NT(rows * c);
	void (*mom)(const float *, int64_t, float, double *, double *) = SDI_PICK(moments);
	void (*aff)(float *, const float *, int64_t, float, float, const float *, const float *) =
		SDI_PICK(affine_row);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t r = 0; r < rows; r++) {
			double mean, var;
			mean_var(mom, x + r * c, c, &mean, &var);
			aff(y + r * c, x + r * c, c, (float)mean, (float)(1.0 / sqrt(var + (double)eps)), g, b);
		}
		sdi_work_end(w0);
	}
	free(g), free(b);
	return SD_OK;
}
