//go:build onednn

package bench

/*
#cgo LDFLAGS: -ldnnl
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <oneapi/dnnl/dnnl.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// bench_matmul times y[M,N] = x[M,K]·w[N,K]ᵀ with oneDNN's matmul (weights
// given transposed, as gosd's Linear takes them); bf16 != 0 makes x and w
// bf16 (converted before timing), y stays f32. Returns the best seconds of
// at least two calls lasting min_s in all, or a negative dnnl status.
static double bench_matmul(long m, long k, long n, int bf16, double min_s, int *calls)
{
	dnnl_engine_t eng;
	dnnl_stream_t st;
	if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success)
		return -1;
	dnnl_stream_create(&st, eng, dnnl_stream_default_flags);
	dnnl_data_type_t it = bf16 ? dnnl_bf16 : dnnl_f32;
	dnnl_dims_t sd = {m, k}, wd = {k, n}, dd = {m, n};
	dnnl_memory_desc_t smd, wmd, dmd;
	dnnl_memory_desc_init_by_tag(&smd, 2, sd, it, dnnl_ab);
	dnnl_memory_desc_init_by_tag(&wmd, 2, wd, it, dnnl_ba);
	dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, dnnl_ab);
	dnnl_matmul_desc_t md;
	dnnl_matmul_desc_init(&md, &smd, &wmd, NULL, &dmd);
	dnnl_primitive_desc_t pd;
	dnnl_status_t s = dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL);
	if (s != dnnl_success)
		return -(double)s - 2;
	dnnl_primitive_t prim;
	dnnl_primitive_create(&prim, pd);
	size_t es = bf16 ? 2 : 4;
	void *x = calloc((size_t)(m * k), es), *w = calloc((size_t)(k * n), es), *y = calloc((size_t)(m * n), 4);
	unsigned short one = 0x3f80; // bf16 1.0
	float onef = 1.0f;
	for (long i = 0; i < m * k; i++)
		memcpy((char *)x + i * es, bf16 ? (void *)&one : (void *)&onef, es);
	for (long i = 0; i < k * n; i++)
		memcpy((char *)w + i * es, bf16 ? (void *)&one : (void *)&onef, es);
	dnnl_memory_t xm, wm, ym;
	dnnl_memory_create(&xm, &smd, eng, x);
	dnnl_memory_create(&wm, &wmd, eng, w);
	dnnl_memory_create(&ym, &dmd, eng, y);
	dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}};
	dnnl_primitive_execute(prim, st, 3, args); // warm-up
	dnnl_stream_wait(st);
	double best = 1e30, t0 = now_s();
	*calls = 1; // the warm-up
	for (int i = 0; i < 2 || now_s() - t0 < min_s; i++) {
		(*calls)++;
		double a = now_s();
		dnnl_primitive_execute(prim, st, 3, args);
		dnnl_stream_wait(st);
		double d = now_s() - a;
		best = d < best ? d : best;
	}
	dnnl_memory_destroy(xm);
	dnnl_memory_destroy(wm);
	dnnl_memory_destroy(ym);
	free(x);
	free(w);
	free(y);
	dnnl_primitive_destroy(prim);
	dnnl_primitive_desc_destroy(pd);
	dnnl_stream_destroy(st);
	dnnl_engine_destroy(eng);
	return best;
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"time"
)

func init() { OneDNN = oneDNN }

// oneDNN times oneDNN's matmul (Debian's libdnnl, bench-only) on shapes.
func oneDNN(shapes [][3]int, precision string, peakGFLOPS float64, minTime time.Duration) ([]KernelResult, error) {
	threads := runtime.NumCPU()
	var out []KernelResult
	for _, s := range shapes {
		m, k, n := s[0], s[1], s[2]
		bf := 0
		if precision == "bf16" {
			bf = 1
		}
		c0 := CPUSeconds()
		var ncalls C.int
		sec := float64(C.bench_matmul(C.long(m), C.long(k), C.long(n), C.int(bf), C.double(minTime.Seconds()), &ncalls))
		if sec < 0 {
			return nil, fmt.Errorf("bench: oneDNN %s matmul %dx%dx%d failed (status %.0f)", precision, m, k, n, -sec-2)
		}
		g := 2 * float64(m) * float64(k) * float64(n) / sec / 1e9
		// CPU rate over the warm-up and timed calls (set-up included: a low estimate).
		calls := int(ncalls)
		gc := 2 * float64(m) * float64(k) * float64(n) * float64(calls) / (CPUSeconds() - c0) * float64(threads) / 1e9
		out = append(out, KernelResult{Op: "linear", Shape: fmt.Sprintf("%dx%dx%d", m, k, n), DType: precision,
			Precision: precision, Impl: "onednn", Seconds: sec, GFLOPS: g, PeakShare: g / peakGFLOPS, GFLOPSCPU: gc})
	}
	return out, nil
}
