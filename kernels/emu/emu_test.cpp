// emu_test.cpp: runs gosd's CUDA kernels under the host emulation of emu.h
// (see run.sh) through their C entry points and compares them with plain
// double-precision references on odd and SD-like shapes. "Device" pointers
// are host pointers here. Errors are max|got-want| / RMS(want); tolerances
// per dtype as in sd/tensor/cuda_test.go (the 16-bit paths round their
// inputs, so the references get the same rounded inputs and the remaining
// error is accumulation order and the rounded softmax weights).
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "emu.h"
#include "gosd_cuda.h"

static int failures = 0;

static void check(const std::string &name, const std::vector<float> &got, const std::vector<float> &want, double tol) {
    double mx = 0, ss = 0;
    for (size_t i = 0; i < want.size(); i++) {
        double d = std::fabs((double)got[i] - want[i]);
        if (std::isnan(d)) {
            d = INFINITY;
        }
        mx = std::max(mx, d);
        ss += (double)want[i] * want[i];
    }
    double rms = std::sqrt(ss / std::max<size_t>(1, want.size()));
    double e = rms > 0 ? mx / rms : mx;
    bool ok = e <= tol;
    failures += !ok;
    printf("%-4s %-48s err %.3g (tol %.g, %zu values)\n", ok ? "ok" : "FAIL", name.c_str(), e, tol, want.size());
}

static void rc(int r, const char *msg, const char *what) {
    if (r != SD_CUDA_OK) {
        printf("FAIL %s: status %d: %s\n", what, r, msg);
        failures++;
    }
}

static std::mt19937 rng(42);
static std::vector<float> rnd(size_t n, float scale) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (auto &x : v) {
        x = u(rng);
    }
    return v;
}

static uint16_t h16(float f) {
    __half h = __float2half_rn(f);
    uint16_t b;
    std::memcpy(&b, &h, 2);
    return b;
}
static float f16(uint16_t b) {
    __half h;
    std::memcpy(&h, &b, 2);
    return __half2float(h);
}
static uint16_t hb16(float f) { return __float2bfloat16_rn(f).b; }
static float fb16(uint16_t b) { return __bfloat162float(__nv_bfloat16{b}); }

// dtype 1 = f16, 2 = bf16: round x in place and return the bits.
static std::vector<uint16_t> to16(std::vector<float> &x, int dt) {
    std::vector<uint16_t> h(x.size());
    for (size_t i = 0; i < x.size(); i++) {
        h[i] = dt == SD_CUDA_F16 ? h16(x[i]) : hb16(x[i]);
        x[i] = dt == SD_CUDA_F16 ? f16(h[i]) : fb16(h[i]);
    }
    return h;
}

static std::vector<float> ref_attention(const std::vector<float> &q, const std::vector<float> &k,
                                        const std::vector<float> &v, int B, int Lq, int Lk, int H, int D, bool causal) {
    std::vector<float> y((size_t)B * Lq * H * D);
    size_t st = (size_t)H * D;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Lq; i++) {
                int end = causal ? i + 1 : Lk;
                std::vector<double> s(end);
                double mx = -INFINITY;
                for (int j = 0; j < end; j++) {
                    double d = 0;
                    for (int t = 0; t < D; t++)
                        d += (double)q[(b * Lq + i) * st + h * D + t] * k[(b * Lk + j) * st + h * D + t];
                    s[j] = d / std::sqrt((double)D);
                    mx = std::max(mx, s[j]);
                }
                double sum = 0;
                for (auto &e : s) {
                    e = std::exp(e - mx);
                    sum += e;
                }
                for (int t = 0; t < D; t++) {
                    double o = 0;
                    for (int j = 0; j < end; j++)
                        o += s[j] * v[(b * Lk + j) * st + h * D + t];
                    y[(b * Lq + i) * st + h * D + t] = (float)(o / sum);
                }
            }
    return y;
}

static void test_attention(int B, int Lq, int Lk, int H, int D, bool causal, int dt) {
    size_t nq = (size_t)B * Lq * H * D, nk = (size_t)B * Lk * H * D;
    auto q = rnd(nq, 2), k = rnd(nk, 2), v = rnd(nk, 1);
    char msg[256] = "";
    std::vector<float> got(nq);
    double tol = 1e-4;
    if (dt == SD_CUDA_F32) {
        rc(sd_cuda_attention_f32(q.data(), k.data(), v.data(), got.data(), B, Lq, Lk, H, D, causal, nullptr, msg,
                                 sizeof msg),
           msg, "attention_f32");
    } else {
        auto qh = to16(q, dt), kh = to16(k, dt), vh = to16(v, dt);
        std::vector<uint16_t> yh(nq + 64, 0xabcd); // guard band after the output
        auto f = dt == SD_CUDA_F16 ? sd_cuda_attention_f16 : sd_cuda_attention_bf16;
        rc(f(qh.data(), kh.data(), vh.data(), yh.data(), B, Lq, Lk, H, D, causal, nullptr, msg, sizeof msg), msg,
           "attention");
        for (size_t i = 0; i < nq; i++)
            got[i] = dt == SD_CUDA_F16 ? f16(yh[i]) : fb16(yh[i]);
        for (size_t i = nq; i < yh.size(); i++)
            if (yh[i] != 0xabcd) {
                printf("FAIL attention wrote past its output at %zu\n", i);
                failures++;
                break;
            }
        tol = dt == SD_CUDA_F16 ? 1e-2 : 6e-2;
    }
    char name[128];
    snprintf(name, sizeof name, "attention %s B%d Lq%d Lk%d H%d D%d%s", dt == 0 ? "f32" : dt == 1 ? "f16" : "bf16", B,
             Lq, Lk, H, D, causal ? " causal" : "");
    check(name, got, ref_attention(q, k, v, B, Lq, Lk, H, D, causal), tol);
}

static void test_conv(int B, int C, int H, int W, int O, int kh, int kw, int s, int pt, int pl, int pb, int pr, int dt,
                      bool bias) {
    auto x = rnd((size_t)B * C * H * W, 1), w = rnd((size_t)O * C * kh * kw, 0.3f), bv = rnd(O, 1);
    int Ho = (H + pt + pb - kh) / s + 1, Wo = (W + pl + pr - kw) / s + 1;
    std::vector<float> got((size_t)B * O * Ho * Wo + 64, 1234.5f);
    char msg[256] = "";
    std::vector<float> xr = x; // what the kernel effectively multiplies
    if (dt == SD_CUDA_F32) {
        rc(sd_cuda_conv2d_f32(x.data(), w.data(), bias ? bv.data() : nullptr, SD_CUDA_F32, got.data(), B, C, H, W, O,
                              kh, kw, s, pt, pl, pb, pr, nullptr, msg, sizeof msg),
           msg, "conv2d_f32");
    } else {
        auto wh = to16(w, dt);
        to16(xr, dt);
        auto bh = to16(bv, dt);
        auto f = dt == SD_CUDA_F16 ? sd_cuda_conv2d_f16 : sd_cuda_conv2d_bf16;
        rc(f(x.data(), wh.data(), bias ? bh.data() : nullptr, dt, got.data(), B, C, H, W, O, kh, kw, s, pt, pl, pb, pr,
             nullptr, msg, sizeof msg),
           msg, "conv2d");
    }
    std::vector<float> want((size_t)B * O * Ho * Wo);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double acc = bias ? bv[o] : 0;
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < kh; ky++)
                            for (int kx = 0; kx < kw; kx++) {
                                int iy = oy * s - pt + ky, ix = ox * s - pl + kx;
                                if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                    acc += (double)xr[((b * C + c) * H + iy) * W + ix] * w[((o * C + c) * kh + ky) * kw + kx];
                            }
                    want[((b * O + o) * Ho + oy) * Wo + ox] = (float)acc;
                }
    for (size_t i = want.size(); i < got.size(); i++)
        if (got[i] != 1234.5f) {
            printf("FAIL conv2d wrote past its output\n");
            failures++;
            break;
        }
    got.resize(want.size());
    char name[160];
    snprintf(name, sizeof name, "conv2d %s %dx%dx%dx%d->%d k%dx%d s%d pad%d,%d,%d,%d", dt == 0 ? "f32" : dt == 1 ? "f16" : "bf16",
             B, C, H, W, O, kh, kw, s, pt, pl, pb, pr);
    check(name, got, want, dt == SD_CUDA_F32 ? 1e-5 : 1e-4); // inputs pre-rounded: only summation order differs
}

static void test_norms() {
    char msg[256] = "";
    int B = 2, C = 96, HW = 35, G = 32;
    auto x = rnd((size_t)B * C * HW, 3), g = rnd(C, 1), bt = rnd(C, 1);
    for (auto &e : x)
        e += 5;
    auto gh = g;
    auto ghb = to16(gh, SD_CUDA_F16);
    std::vector<float> y(x.size());
    rc(sd_cuda_group_norm_f32(x.data(), ghb.data(), SD_CUDA_F16, bt.data(), SD_CUDA_F32, y.data(), B, C, HW, G, 1e-5f, 1,
                              nullptr, msg, sizeof msg),
       msg, "group_norm");
    std::vector<float> want(x.size());
    int cg = C / G;
    for (int b = 0; b < B; b++)
        for (int gi = 0; gi < G; gi++) {
            size_t base = ((size_t)b * C + gi * cg) * HW, n = (size_t)cg * HW;
            double m = 0, var = 0;
            for (size_t i = 0; i < n; i++)
                m += x[base + i];
            m /= n;
            for (size_t i = 0; i < n; i++)
                var += (x[base + i] - m) * (x[base + i] - m);
            var /= n;
            for (size_t i = 0; i < n; i++) {
                int c = gi * cg + (int)(i / HW);
                double o = (x[base + i] - m) / std::sqrt(var + 1e-5) * gh[c] + bt[c];
                want[base + i] = (float)(o / (1 + std::exp(-o)));
            }
        }
    check("group_norm silu f16 gamma", y, want, 1e-5);
    // In place, as the backend calls it.
    std::vector<float> xi = x;
    rc(sd_cuda_group_norm_f32(xi.data(), ghb.data(), SD_CUDA_F16, bt.data(), SD_CUDA_F32, xi.data(), B, C, HW, G, 1e-5f,
                              1, nullptr, msg, sizeof msg),
       msg, "group_norm in place");
    check("group_norm in place", xi, want, 1e-5);

    int R = 7, Cl = 300;
    auto xl = rnd((size_t)R * Cl, 2), gl = rnd(Cl, 1), bl = rnd(Cl, 1);
    std::vector<float> yl(xl.size()), wl(xl.size());
    auto blh = to16(bl, SD_CUDA_BF16);
    rc(sd_cuda_layer_norm_f32(xl.data(), gl.data(), SD_CUDA_F32, blh.data(), SD_CUDA_BF16, yl.data(), R, Cl, 1e-5f,
                              nullptr, msg, sizeof msg),
       msg, "layer_norm");
    for (int r = 0; r < R; r++) {
        double m = 0, var = 0;
        for (int i = 0; i < Cl; i++)
            m += xl[r * Cl + i];
        m /= Cl;
        for (int i = 0; i < Cl; i++)
            var += (xl[r * Cl + i] - m) * (xl[r * Cl + i] - m);
        var /= Cl;
        for (int i = 0; i < Cl; i++)
            wl[r * Cl + i] = (float)((xl[r * Cl + i] - m) / std::sqrt(var + 1e-5) * gl[i] + bl[i]);
    }
    check("layer_norm bf16 beta", yl, wl, 1e-5);
}

static void test_elementwise() {
    char msg[256] = "";
    int B = 2, M = 37, N = 45;
    auto x = rnd((size_t)B * M * N, 2);
    std::vector<float> y(x.size()), want(x.size());
    rc(sd_cuda_transpose_f32(x.data(), y.data(), B, M, N, nullptr, msg, sizeof msg), msg, "transpose");
    for (int b = 0; b < B; b++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                want[((size_t)b * N + j) * M + i] = x[((size_t)b * M + i) * N + j];
    check("transpose 2x37x45", y, want, 0);

    int H = 5, W = 7, BC = 6;
    auto u = rnd((size_t)BC * H * W, 1);
    std::vector<float> uy((size_t)BC * 4 * H * W), uw(uy.size());
    rc(sd_cuda_upsample2x_f32(u.data(), uy.data(), BC, H, W, 2 * H, 2 * W, nullptr, msg, sizeof msg), msg, "upsample2x");
    for (int p = 0; p < BC; p++)
        for (int i = 0; i < 2 * H; i++)
            for (int j = 0; j < 2 * W; j++)
                uw[((size_t)p * 2 * H + i) * 2 * W + j] = u[((size_t)p * H + i / 2) * W + j / 2];
    check("upsample2x 6x5x7", uy, uw, 0);
    std::vector<float> oy((size_t)BC * (2 * H - 1) * 2 * W), ow;
    rc(sd_cuda_upsample2x_f32(u.data(), oy.data(), BC, H, W, 2 * H - 1, 2 * W, nullptr, msg, sizeof msg), msg,
       "upsample2x odd");
    for (int p = 0; p < BC; p++)
        for (int i = 0; i < 2 * H - 1; i++)
            for (int j = 0; j < 2 * W; j++)
                ow.push_back(u[((size_t)p * H + i / 2) * W + j / 2]);
    check("upsample2x 6x5x7 -> 9x14", oy, ow, 0);

    size_t na = 11, nb = 5;
    auto a = rnd(3 * na, 1), bb = rnd(3 * nb, 1);
    std::vector<float> cy(3 * (na + nb)), cw;
    rc(sd_cuda_concat_f32(a.data(), bb.data(), cy.data(), 3, na, nb, nullptr, msg, sizeof msg), msg, "concat");
    for (int r = 0; r < 3; r++) {
        cw.insert(cw.end(), a.begin() + r * na, a.begin() + (r + 1) * na);
        cw.insert(cw.end(), bb.begin() + r * nb, bb.begin() + (r + 1) * nb);
    }
    check("concat", cy, cw, 0);

    size_t R = 9, Ng = 13;
    auto gx = rnd(R * 2 * Ng, 3);
    std::vector<float> gy(R * Ng), gw(R * Ng);
    rc(sd_cuda_geglu_f32(gx.data(), gy.data(), R, Ng, nullptr, msg, sizeof msg), msg, "geglu");
    for (size_t r = 0; r < R; r++)
        for (size_t j = 0; j < Ng; j++) {
            double g = gx[r * 2 * Ng + Ng + j];
            gw[r * Ng + j] = (float)(gx[r * 2 * Ng + j] * 0.5 * g * (1 + std::erf(g / std::sqrt(2.0))));
        }
    check("geglu", gy, gw, 1e-6);

    auto ch = rnd(B * 3, 1);
    auto xc = rnd((size_t)B * 3 * 10, 1);
    std::vector<float> yc(xc.size()), wc(xc.size());
    rc(sd_cuda_add_channel_f32(xc.data(), ch.data(), yc.data(), B * 3, 10, nullptr, msg, sizeof msg), msg, "add_channel");
    for (size_t i = 0; i < xc.size(); i++)
        wc[i] = xc[i] + ch[i / 10];
    check("add_channel", yc, wc, 0);

    auto bias = rnd(Ng, 1);
    auto bh = to16(bias, SD_CUDA_F16);
    std::vector<float> yb = gy, wb = gy;
    rc(sd_cuda_add_bias_f32(yb.data(), bh.data(), SD_CUDA_F16, R, Ng, nullptr, msg, sizeof msg), msg, "add_bias");
    for (size_t i = 0; i < wb.size(); i++)
        wb[i] += bias[i % Ng];
    check("add_bias f16", yb, wb, 0);

    for (int op = SD_CUDA_SILU; op <= SD_CUDA_TANH; op++) {
        std::vector<float> uy2(x.size()), uw2(x.size());
        rc(sd_cuda_unary_f32(x.data(), uy2.data(), x.size(), op, nullptr, msg, sizeof msg), msg, "unary");
        for (size_t i = 0; i < x.size(); i++) {
            double v = x[i];
            double r = op == SD_CUDA_SILU ? v / (1 + std::exp(-v))
                       : op == SD_CUDA_GELU ? 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))
                       : op == SD_CUDA_QUICK_GELU ? v / (1 + std::exp(-1.702 * v))
                       : op == SD_CUDA_RELU ? std::max(v, 0.0)
                                            : std::tanh(v);
            uw2[i] = (float)r;
        }
        check("unary op " + std::to_string(op), uy2, uw2, 1e-6);
    }

    std::vector<float> cx = {0.f, 1.f, -2.5f, 65504.f, 65520.f, 1e-7f, 3.14159f, -1e30f};
    std::vector<uint16_t> hh(cx.size());
    std::vector<float> back(cx.size()), wantb(cx.size());
    rc(sd_cuda_cast_f32_bf16(cx.data(), hh.data(), cx.size(), nullptr, msg, sizeof msg), msg, "cast");
    rc(sd_cuda_cast_bf16_f32(hh.data(), back.data(), cx.size(), nullptr, msg, sizeof msg), msg, "cast");
    for (size_t i = 0; i < cx.size(); i++)
        wantb[i] = fb16(hb16(cx[i]));
    check("cast f32->bf16->f32", back, wantb, 0);
}

int main() {
    // Flash attention: every padded width, tails in both L, causal, cross.
    test_attention(2, 77, 77, 3, 40, false, SD_CUDA_F16);
    test_attention(1, 77, 77, 2, 64, true, SD_CUDA_F16);
    test_attention(1, 130, 77, 2, 80, false, SD_CUDA_F16);
    test_attention(1, 65, 154, 1, 160, false, SD_CUDA_BF16);
    test_attention(1, 40, 40, 1, 128, true, SD_CUDA_BF16);
    test_attention(2, 33, 5, 3, 24, false, SD_CUDA_F16);
    test_attention(1, 70, 70, 2, 8, true, SD_CUDA_F16);
    test_attention(1, 20, 33, 1, 512, false, SD_CUDA_F32);
    test_attention(1, 35, 35, 2, 40, true, SD_CUDA_F32);
    // Convolutions: tails in M, N and K; stride 2 with bottom/right padding.
    test_conv(2, 5, 13, 11, 67, 3, 3, 2, 0, 0, 1, 1, SD_CUDA_F16, true);
    test_conv(1, 4, 9, 9, 70, 3, 3, 1, 1, 1, 1, 1, SD_CUDA_F16, true);
    test_conv(1, 40, 6, 7, 33, 1, 1, 1, 0, 0, 0, 0, SD_CUDA_BF16, false);
    test_conv(2, 6, 11, 10, 7, 5, 5, 3, 2, 1, 0, 2, SD_CUDA_F16, true);
    test_conv(1, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 1, SD_CUDA_F32, true);
    test_norms();
    test_elementwise();
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
