/*
 * conv.c - 2-D convolution as an implicit GEMM: per image, y[O, Ho*Wo] =
 * w[O, C*kh*kw]·im2col(x)[C*kh*kw, Ho*Wo]. The im2col matrix is generated
 * panel by panel while packing B and never exists whole; a 1x1 stride-1
 * unpadded convolution reads x directly as B.
 */
#include "gemm.h"

int sd_conv2d(float *y, const float *x, const void *w, int wdt, const void *bias, int bdt,
	      int64_t batch, int64_t c, int64_t h, int64_t wd, int64_t o, int64_t kh, int64_t kw,
	      int64_t stride, int64_t pad_top, int64_t pad_left, int64_t ho, int64_t wo,
	      char *msg, int msglen)
{
	if (batch < 0 || c < 1 || h < 1 || wd < 1 || o < 1 || kh < 1 || kw < 1 || stride < 1 ||
	    pad_top < 0 || pad_left < 0 || ho < 1 || wo < 1)
		return sdi_fail(msg, msglen, SD_ERR_ARG,
				"conv2d: bad sizes b=%lld c=%lld h=%lld w=%lld o=%lld k=%lldx%lld "
				"stride=%lld pad=%lld,%lld out=%lldx%lld",
				(long long)batch, (long long)c, (long long)h, (long long)wd,
				(long long)o, (long long)kh, (long long)kw, (long long)stride,
				(long long)pad_top, (long long)pad_left, (long long)ho, (long long)wo);
	if (!sdi_dtype_ok(wdt) || (bias && !sdi_dtype_ok(bdt)))
		return sdi_fail(msg, msglen, SD_ERR_DTYPE, "conv2d: bad dtype %d/%d", wdt, bdt);
	if (batch > 0 && (!y || !x || !w))
		return sdi_fail(msg, msglen, SD_ERR_ARG, "conv2d: null pointer");
	float *bv = sdi_vec_f32(bias, bdt, o);
	if (bias && !bv)
		return sdi_fail(msg, msglen, SD_ERR_NOMEM, "conv2d: out of memory");
	int direct = kh == 1 && kw == 1 && stride == 1 && pad_top == 0 && pad_left == 0 &&
		     ho == h && wo == wd;
	/*
	 * Few output positions (the deep, small levels of a UNet) would leave
	 * most of each NR-wide column panel empty: compute yᵀ[P, O] =
	 * im2col(x)ᵀ·wᵀ instead, with positions as rows, then transpose.
	 */
	int64_t P = ho * wo;
	int transposed = P < 256 && P % SDI_NR != 0 && o >= 2 * SDI_NR;
	float *yt = NULL;
	if (transposed) {
		yt = sdi_scratch(3, sizeof(float) * (size_t)(batch * P * o));
		if (!yt) {
			free(bv);
			return sdi_fail(msg, msglen, SD_ERR_NOMEM, "conv2d: out of memory");
		}
	}
	int st = SD_OK;
	if (batch == 0) {
		free(bv);
		return SD_OK;
	}
	if (kh == 3 && kw == 3 && stride == 1 && pad_top == 1 && pad_left == 1 && ho == h && wo == wd) {
		st = sdi_conv3x3_wino(y, x, w, wdt, bv, batch, c, h, wd, o);
		if (st >= 0) {
			free(bv);
			return st ? sdi_fail(msg, msglen, st, "conv2d: out of memory") : SD_OK;
		}
		st = SD_OK;
	}
	sdi_conv_geo geo = {x, c, h, wd, kh, kw, stride, pad_top, pad_left, ho, wo, c * h * wd};
	if (transposed) {
		/* Rows of yᵀ are (image, position) pairs: all images in one GEMM. */
		sdi_gemm g = {.m = batch * P, .n = o, .k = c * kh * kw, .a_kind = SDI_A_IM2COLT,
			      .geo = &geo, .b_kind = SDI_B_TRANS, .b = w, .bdt = wdt,
			      .ldb = c * kh * kw, .c = yt, .ldc = o, .bias_n = bv, .weight = SDI_W_B};
		st = sdi_gemm_run(&g);
		for (int64_t n = 0; n < batch && st == SD_OK; n++) {
			float *yn = y + n * o * P;
			const float *tn = yt + n * P * o;
			for (int64_t oc = 0; oc < o; oc++)
				for (int64_t p = 0; p < P; p++)
					yn[oc * P + p] = tn[p * o + oc];
		}
	} else {
		sdi_gemm g = {.m = o, .n = P, .k = c * kh * kw, .a = w, .adt = wdt,
			      .lda = c * kh * kw, .c = y, .ldc = P, .bias_m = bv,
			      .batch = batch, .b_bstride = c * h * wd, .c_bstride = o * P,
			      .weight = SDI_W_A};
		if (direct) {
			g.b_kind = SDI_B_ROWS, g.b = x, g.bdt = SD_F32, g.ldb = h * wd;
		} else {
			g.b_kind = SDI_B_IM2COL, g.geo = &geo;
		}
		st = sdi_gemm_run(&g);
	}
	free(bv);
	if (st)
		return sdi_fail(msg, msglen, st, "conv2d: out of memory");
	return SD_OK;
}
