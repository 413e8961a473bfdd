/* elementwise.c - activations, arithmetic, layout changes and dtype casts. */
#include "gemm.h"

#define SDI_CHUNK 16384 /* elements per parallel work item */

SDI_DUAL(unary_run, (float *y, const float *x, int64_t n, int op), {
	switch (op) {
	case SD_SILU:
		for (int64_t i = 0; i < n; i++)
			y[i] = sdi_silu(x[i]);
		break;
	case SD_GELU:
		for (int64_t i = 0; i < n; i++)
			y[i] = sdi_gelu(x[i]);
		break;
	case SD_QUICK_GELU:
		for (int64_t i = 0; i < n; i++)
			y[i] = x[i] / (1.0f + sdi_expf(-1.702f * x[i]));
		break;
	case SD_RELU:
		for (int64_t i = 0; i < n; i++)
			y[i] = x[i] > 0 ? x[i] : 0.0f;
		break;
	default:
		for (int64_t i = 0; i < n; i++)
			y[i] = tanhf(x[i]);
	}
})

SDI_DUAL(binary_run, (float *y, const float *a, const float *b, int64_t n, int op), {
	if (op == 0)
		for (int64_t i = 0; i < n; i++)
			y[i] = a[i] + b[i];
	else
		for (int64_t i = 0; i < n; i++)
			y[i] = a[i] * b[i];
})

SDI_DUAL(scale_run, (float *y, const float *x, int64_t n, float s, float t), {
	for (int64_t i = 0; i < n; i++)
		y[i] = x[i] * s + t;
})

SDI_DUAL(geglu_row, (float *y, const float *x, int64_t n), {
	for (int64_t j = 0; j < n; j++)
		y[j] = x[j] * sdi_gelu(x[n + j]);
})

#define SDI_CHECK_N(op)                                                                      \
	if (n < 0)                                                                           \
		return sdi_fail(msg, msglen, SD_ERR_ARG, op ": negative size %lld", (long long)n); \
	if (n == 0)                                                                          \
		return SD_OK;

int sd_unary(float *y, const float *x, int64_t n, int op, char *msg, int msglen)
{
	SDI_CHECK_N("unary")
	if (op < SD_SILU || op > SD_TANH)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "unary: unknown op %d", op);
	if (!y || !x)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "unary: null pointer");
	void (*f)(float *, const float *, int64_t, int) = SDI_PICK(unary_run);
	int64_t chunks = (n + SDI_CHUNK - 1) / SDI_CHUNK;
	int nt = SDI_NT(n);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t ch = 0; ch < chunks; ch++) {
			int64_t i = ch * SDI_CHUNK, e = n - i < SDI_CHUNK ? n - i : SDI_CHUNK;
			f(y + i, x + i, e, op);
		}
		sdi_work_end(w0);
	}
	return SD_OK;
}

static int binary(float *y, const float *a, const float *b, int64_t n, int op, char *msg,
		  int msglen)
{
	const char *name = op == 0 ? "add" : "mul";
	if (n < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "%s: negative size", name);
	if (n == 0)
		return SD_OK;
	if (!y || !a || !b)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "%s: null pointer", name);
	void (*f)(float *, const float *, const float *, int64_t, int) = SDI_PICK(binary_run);
	int64_t chunks = (n + SDI_CHUNK - 1) / SDI_CHUNK;
	int nt = SDI_NT(n);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t ch = 0; ch < chunks; ch++) {
			int64_t i = ch * SDI_CHUNK, e = n - i < SDI_CHUNK ? n - i : SDI_CHUNK;
			f(y + i, a + i, b + i, e, op);
		}
		sdi_work_end(w0);
	}
	return SD_OK;
}

int sd_add(float *y, const float *a, const float *b, int64_t n, char *msg, int msglen)
{
	return binary(y, a, b, n, 0, msg, msglen);
}

int sd_mul(float *y, const float *a, const float *b, int64_t n, char *msg, int msglen)
{
	return binary(y, a, b, n, 1, msg, msglen);
}

int sd_scale(float *y, const float *x, float s, float t, int64_t n, char *msg, int msglen)
{
	SDI_CHECK_N("scale")
	if (!y || !x)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "scale: null pointer");
	void (*f)(float *, const float *, int64_t, float, float) = SDI_PICK(scale_run);
	int64_t chunks = (n + SDI_CHUNK - 1) / SDI_CHUNK;
	int nt = SDI_NT(n);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t ch = 0; ch < chunks; ch++) {
			int64_t i = ch * SDI_CHUNK, e = n - i < SDI_CHUNK ? n - i : SDI_CHUNK;
			f(y + i, x + i, e, s, t);
		}
		sdi_work_end(w0);
	}
	return SD_OK;
}

int sd_add_channel(float *y, const float *x, const float *c, int64_t p, int64_t s, char *msg,
		   int msglen)
{
	if (p < 0 || s < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "add_channel: negative size");
	if (p * s == 0)
		return SD_OK;
	if (!y || !x || !c)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "add_channel: null pointer");
	void (*f)(float *, const float *, int64_t, float, float) = SDI_PICK(scale_run);
	int nt = SDI_NT(p * s);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t i = 0; i < p; i++)
			f(y + i * s, x + i * s, s, 1.0f, c[i]);
		sdi_work_end(w0);
	}
	return SD_OK;
}

int sd_geglu(float *y, const float *x, int64_t rows, int64_t n, char *msg, int msglen)
{
	if (rows < 0 || n < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "geglu: negative size");
	if (rows * n == 0)
		return SD_OK;
	if (!y || !x)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "geglu: null pointer");
	void (*f)(float *, const float *, int64_t) = SDI_PICK(geglu_row);
	int nt = SDI_NT(rows * n);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t r = 0; r < rows; r++)
			f(y + r * n, x + r * 2 * n, n);
		sdi_work_end(w0);
	}
	return SD_OK;
}

int sd_transpose(float *y, const float *x, int64_t batch, int64_t m, int64_t n, char *msg,
		 int msglen)
{
	if (batch < 0 || m < 0 || n < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "transpose: negative size");
	if (batch * m * n == 0)
		return SD_OK;
	if (!y || !x)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "transpose: null pointer");
	const int64_t T = 32;
	int64_t tm = (m + T - 1) / T, tn = (n + T - 1) / T, jobs = batch * tm * tn;
	int nt = SDI_NT(batch * m * n);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t j = 0; j < jobs; j++) {
			int64_t b = j / (tm * tn), i0 = (j / tn) % tm * T, j0 = j % tn * T;
			int64_t i1 = i0 + T < m ? i0 + T : m, j1 = j0 + T < n ? j0 + T : n;
			const float *xb = x + b * m * n;
			float *yb = y + b * m * n;
			for (int64_t jj = j0; jj < j1; jj++)
				for (int64_t ii = i0; ii < i1; ii++)
					yb[jj * m + ii] = xb[ii * n + jj];
		}
		sdi_work_end(w0);
	}
	return SD_OK;
}

int sd_concat(float *y, const float *a, const float *b, int64_t batch, int64_t na, int64_t nb,
	      char *msg, int msglen)
{
	if (batch < 0 || na < 0 || nb < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "concat: negative size");
	if (batch * (na + nb) == 0)
		return SD_OK;
	if (!y || (na && !a) || (nb && !b))
		return sdi_fail(msg, msglen, SD_ERR_ARG, "concat: null pointer");
	for (int64_t i = 0; i < batch; i++) {
		if (na)
			memcpy(y + i * (na + nb), a + i * na, (size_t)na * sizeof(float));
		if (nb)
			memcpy(y + i * (na + nb) + na, b + i * nb, (size_t)nb * sizeof(float));
	}
	return SD_OK;
}

int sd_upsample2x(float *y, const float *x, int64_t p, int64_t h, int64_t w, int64_t oh, int64_t ow,
		  char *msg, int msglen)
{
	if (p < 0 || h < 0 || w < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "upsample2x: negative size");
	if ((oh != 2 * h && (oh != 2 * h - 1 || h == 0)) || (ow != 2 * w && (ow != 2 * w - 1 || w == 0)))
		return sdi_fail(msg, msglen, SD_ERR_ARG,
				"upsample2x: output %lldx%lld from %lldx%lld (want 2H or 2H-1 by 2W or 2W-1)",
				(long long)oh, (long long)ow, (long long)h, (long long)w);
	if (p * h * w == 0)
		return SD_OK;
	if (!y || !x)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "upsample2x: null pointer");
	int64_t rows = p * h;
	int nt = SDI_NT(rows * w * 4);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t r = 0; r < rows; r++) {
			int64_t pi = r / h, i = r % h; /* plane, source row */
			const float *xr = x + r * w;
			float *y0 = y + (pi * oh + 2 * i) * ow;
			for (int64_t j = 0; j < ow; j++)
				y0[j] = xr[j / 2];
			if (2 * i + 1 < oh)
				memcpy(y0 + ow, y0, (size_t)ow * sizeof(float));
		}
		sdi_work_end(w0);
	}
	return SD_OK;
}

int sd_cast_to_f32(float *y, const void *x, int dt, int64_t n, char *msg, int msglen)
{
	SDI_CHECK_N("cast")
	if (!sdi_dtype_ok(dt))
		return sdi_fail(msg, msglen, SD_ERR_DTYPE, "cast: bad dtype %d", dt);
	if (!y || !x)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "cast: null pointer");
	sdi_cvt_fn cvt = sdi_get_cvt();
	int64_t chunks = (n + SDI_CHUNK - 1) / SDI_CHUNK;
	int nt = SDI_NT(n);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t ch = 0; ch < chunks; ch++) {
			int64_t i = ch * SDI_CHUNK, e = n - i < SDI_CHUNK ? n - i : SDI_CHUNK;
			cvt(x, dt, i, e, y + i);
		}
		sdi_work_end(w0);
	}
	return SD_OK;
}

/* f32 -> binary16 bits, round to nearest even, with subnormals, inf and nan. */
static uint16_t f32_f16(float f)
{
	uint32_t b = sdi_f32_bits(f);
	uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
	int32_t exp = (int32_t)((b >> 23) & 0xff);
	uint32_t mant = b & 0x7fffff;
	if (exp == 0xff)
		return sign | (mant ? 0x7e00 : 0x7c00);
	int32_t e = exp - 127 + 15;
	if (e >= 0x1f)
		return sign | 0x7c00;
	if (e <= 0) {
		if (e < -10)
			return sign;
		mant |= 0x800000;
		uint32_t shift = (uint32_t)(14 - e);
		uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (half & 1)))
			half++;
		return sign | (uint16_t)half;
	}
	uint32_t half = ((uint32_t)e << 10) | (mant >> 13), rem = mant & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
		half++; /* a carry into the exponent is correct */
	return sign | (uint16_t)half;
}

/* f32 -> bfloat16 bits, round to nearest even; nan stays nan. */
static uint16_t f32_bf16(float f)
{
	uint32_t b = sdi_f32_bits(f);
	if ((b & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((b >> 16) | 0x40);
	b += 0x7fff + ((b >> 16) & 1);
	return (uint16_t)(b >> 16);
}

int sd_cast_from_f32(void *y, const float *x, int dt, int64_t n, char *msg, int msglen)
{
	SDI_CHECK_N("cast")
	if (!sdi_dtype_ok(dt))
		return sdi_fail(msg, msglen, SD_ERR_DTYPE, "cast: bad dtype %d", dt);
	if (!y || !x)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "cast: null pointer");
	if (dt == SD_F32) {
		memmove(y, x, (size_t)n * sizeof(float));
		return SD_OK;
	}
	uint16_t *o = y;
	int nt = SDI_NT(n);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(static) nowait
		for (int64_t i = 0; i < n; i++)
			o[i] = dt == SD_F16 ? f32_f16(x[i]) : f32_bf16(x[i]);
		sdi_work_end(w0);
	}
	return SD_OK;
}
