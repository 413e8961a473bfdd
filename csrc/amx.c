/*
 * amx.c - AMX-BF16 detection and tile micro-kernel (Intel Sapphire Rapids and
 * later). The kernel computes a 16x16 f32 tile C += A·B with A [16][32] bf16
 * and B in AMX's pair layout [16][16][2] (16 k pairs x 16 columns).
 *
 * TODO: unmeasured and not yet wired into the GEMM driver: it was written on
 * an AMD Zen 4 machine without AMX, so it is compiled and gated (CPUID leaf 7
 * EDX bits 22/24 for amx-bf16/amx-tile, plus the kernel's permission for tile
 * data via arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) but never
 * selected. Wiring it needs 16-row A panels and 32-deep k blocks in the driver.
 */
#define _GNU_SOURCE
#include "gemm.h"

#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_state = -1;

/* amx_probe: CPUID says amx-tile and amx-bf16, and Linux grants tile data. */
static int amx_probe(void)
{
	unsigned a, b, c, d;
	if (__get_cpuid_max(0, NULL) < 7)
		return 0;
	__cpuid_count(7, 0, a, b, c, d);
	int tile = (d >> 24) & 1, bf16 = (d >> 22) & 1;
	if (!tile || !bf16)
		return 0;
	if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
		return 0;
	return 1;
}

int sd_cpu_has_amx(void)
{
	int s = __atomic_load_n(&amx_state, __ATOMIC_RELAXED);
	if (s < 0) {
		s = amx_probe();
		__atomic_store_n(&amx_state, s, __ATOMIC_RELAXED);
	}
	return s;
}

/* Tile configuration, palette 1: tmm0 = C (16x16 f32), tmm1 = A (16x32 bf16), tmm2 = B. */
typedef struct {
	uint8_t palette, start;
	uint8_t pad[14];
	uint16_t colsb[16];
	uint8_t rows[16];
} amx_cfg;

/*
 * sdi_ukr_amx: C[16, 16] (row stride ldc floats) += sum over k2 pairs blocks of
 * 16 of A·B; a: [kb][16][32] bf16 (k blocks of 32), b: [kb][16][16][2]. Only
 * call when sd_cpu_has_amx() is true.
 */
__attribute__((target("amx-tile,amx-bf16"))) void sdi_ukr_amx(int64_t kb, const uint16_t *a,
							       const uint16_t *b, float *c,
							       int64_t ldc)
{
	amx_cfg cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.palette = 1;
	cfg.colsb[0] = 64, cfg.rows[0] = 16;
	cfg.colsb[1] = 64, cfg.rows[1] = 16;
	cfg.colsb[2] = 64, cfg.rows[2] = 16;
	_tile_loadconfig(&cfg);
	_tile_loadd(0, c, ldc * 4);
	for (int64_t p = 0; p < kb; p++) {
		_tile_loadd(1, a + p * 16 * 32, 64);
		_tile_loadd(2, b + p * 16 * 32, 64);
		_tile_dpbf16ps(0, 1, 2);
	}
	_tile_stored(0, c, ldc * 4);
	_tile_release();
}
