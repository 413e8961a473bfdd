package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// bf16 tolerances. Rounding an f32 to bf16 (8-bit significand, to nearest
// even) has relative error at most u = 2^-9, so a product of two rounded
// operands is off by at most (2u + u²)·|a·b| and a dot product of K terms,
// accumulated in f32, by at most (2u + u² + K·2^-24)·Σ|aᵢ·bᵢ|. The tests
// compute Σ|aᵢ·bᵢ| exactly with the reference backend on |a| and |b| and
// check every element against that bound.
const bf16U = 1.0 / 512

// withBF16 runs f with the bf16 precision selected, then restores f32; it
// skips on CPUs without AVX512-BF16.
func withBF16(t *testing.T, f func(be *CPU)) {
	t.Helper()
	if !CPUHasBF16() || !CPUHasAVX512() {
		t.Skip("no AVX512-BF16 on this CPU")
	}
	be := NewCPU()
	if be.Name() == "cpu/portable" {
		t.Skip("portable kernels selected (GOSD_CPU=portable): the bf16 products need the AVX-512 kernels")
	}
	if err := be.SetPrecision("bf16"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := be.SetPrecision("f32"); err != nil {
			t.Fatal(err)
		}
	}()
	if be.Name() != "cpu/avx512-bf16" || be.Precision() != "bf16" {
		t.Fatalf("Name() = %q, Precision() = %q with bf16 selected", be.Name(), be.Precision())
	}
	f(be)
}

// absT returns |t| as F32 (16-bit weights converted exactly).
func absT(t *Tensor) *Tensor {
	if t == nil {
		return nil
	}
	if t.DType != F32 {
		f := New(t.Shape...)
		if err := NewCPU().HalfToF32(f, t); err != nil {
			panic(err)
		}
		t = f
	}
	a := New(t.Shape...)
	for i := range a.F32 {
		a.F32[i] = float32(math.Abs(float64(t.F32[i])))
	}
	return a
}

// boundCheck checks |got-want| <= rel(k)·scale + 1e-6 element-wise and
// returns the largest error relative to scale.
func boundCheck(t *testing.T, name string, got, want, scale []float32, k int) float64 {
	t.Helper()
	rel := 2*bf16U + bf16U*bf16U + float64(k)*math.Pow(2, -24)
	worst := 0.0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		s := float64(scale[i])
		if !(d <= rel*s+1e-6) {
			t.Fatalf("%s: [%d] = %v, want %v (bound %g)", name, i, got[i], want[i], rel*s+1e-6)
		}
		if s > 0 {
			worst = max(worst, d/s)
		}
	}
	return worst
}

// differs reports whether got and want differ anywhere (bf16 did run).
func differs(got, want []float32) bool {
	for i := range got {
		if got[i] != want[i] {
			return true
		}
	}
	return false
}

func TestCPUBF16Linear(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	ref := NewRef()
	withBF16(t, func(be *CPU) {
		for ci, c := range []struct {
			m, k, n int
			dt      DType
		}{
			{1, 1, 1, F32}, {5, 7, 3, F16}, {37, 333, 70, F16}, {100, 641, 65, BF16}, {64, 320, 96, F32},
			{300, 1280, 40, F16}, // several depth blocks, odd panel edges
		} {
			x := randF32(rng, -1, 1, c.m, c.k)
			w := asDType(randF32(rng, -1, 1, c.n, c.k), c.dt)
			b := asDType(randF32(rng, -1, 1, c.n), c.dt)
			want, scale := New(c.m, c.n), New(c.m, c.n)
			if err := ref.Linear(want, x, w, b); err != nil {
				t.Fatal(err)
			}
			if err := ref.Linear(scale, absT(x), absT(w), absT(b)); err != nil {
				t.Fatal(err)
			}
			for rep := 0; rep < 2; rep++ { // the second call reads the weight cache
				y, check := guarded(t, c.m, c.n)
				if err := be.Linear(y, x, w, b); err != nil {
					t.Fatal(err)
				}
				check()
				r := boundCheck(t, fmt.Sprintf("case %d", ci), y.F32, want.F32, scale.F32, c.k)
				if c.k > 16 && !differs(y.F32, want.F32) {
					t.Fatalf("case %d: bf16 result equals the exact one", ci)
				}
				t.Logf("case %d %dx%dx%d %v: max error %.2g of sum|x·w| (bound %.2g)", ci, c.m, c.k, c.n, c.dt, r, 2*bf16U)
			}
		}
	})
}

func TestCPUBF16Conv2D(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	ref := NewRef()
	withBF16(t, func(be *CPU) {
		for ci, c := range []struct {
			b, c, h, w, o, k int
			p                Conv2DParams
		}{
			{1, 3, 7, 9, 5, 3, Pad(1, 1)},
			{2, 17, 20, 21, 14, 3, Pad(1, 1)},  // batch: A packed once
			{2, 6, 9, 9, 40, 3, Pad(2, 1)},     // stride 2
			{1, 33, 12, 12, 20, 1, Pad(1, 0)},  // direct 1x1
			{2, 40, 4, 3, 70, 3, Pad(1, 1)},    // few positions: yᵀ = im2col(x)ᵀ·wᵀ
			{1, 320, 16, 16, 64, 3, Pad(1, 1)}, // several depth blocks
		} {
			x := randF32(rng, -1, 1, c.b, c.c, c.h, c.w)
			w := asDType(randF32(rng, -1, 1, c.o, c.c, c.k, c.k), F16)
			bias := asDType(randF32(rng, -1, 1, c.o), F16)
			ho, wo := c.p.OutSize(c.h, c.w, c.k, c.k)
			want, scale := New(c.b, c.o, ho, wo), New(c.b, c.o, ho, wo)
			if err := ref.Conv2D(want, x, w, bias, c.p); err != nil {
				t.Fatal(err)
			}
			if err := ref.Conv2D(scale, absT(x), absT(w), absT(bias), c.p); err != nil {
				t.Fatal(err)
			}
			for rep := 0; rep < 2; rep++ {
				y, check := guarded(t, c.b, c.o, ho, wo)
				if err := be.Conv2D(y, x, w, bias, c.p); err != nil {
					t.Fatal(err)
				}
				check()
				r := boundCheck(t, fmt.Sprintf("case %d", ci), y.F32, want.F32, scale.F32, c.c*c.k*c.k)
				if !differs(y.F32, want.F32) {
					t.Fatalf("case %d: bf16 result equals the exact one", ci)
				}
				t.Logf("case %d: max error %.2g of sum|x·w|", ci, r)
			}
		}
	})
}

// TestCPUBF16Attention bounds the bf16 attention error: scores s = q·k/√D
// are off by at most e_s = (2u + D·2^-24)·max Σ|q||k|/√D, which changes each
// softmax weight by a factor within exp(±2e_s); P and V rounded to bf16 add
// u each. So |Δy| <= (2·e_s + 3u)·max|v| (+ f32 rounding).
func TestCPUBF16Attention(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	ref := NewRef()
	withBF16(t, func(be *CPU) {
		for ci, c := range []struct {
			b, lq, lk, heads, d int
			causal              bool
			scale               float32
		}{
			{1, 7, 13, 3, 5, false, 1},
			{2, 100, 101, 2, 24, false, 2}, // odd key count: a padded pair
			{2, 77, 77, 12, 64, true, 1},
			{1, 300, 77, 8, 40, false, 1},
			{1, 200, 200, 2, 80, false, 1},
			{1, 65, 65, 1, 81, true, 3}, // odd head size
		} {
			q := randF32(rng, -c.scale, c.scale, c.b, c.lq, c.heads*c.d)
			k := randF32(rng, -c.scale, c.scale, c.b, c.lk, c.heads*c.d)
			v := randF32(rng, -1, 1, c.b, c.lk, c.heads*c.d)
			want := New(q.Shape...)
			if err := ref.Attention(want, q, k, v, c.heads, c.causal); err != nil {
				t.Fatal(err)
			}
			y, check := guarded(t, q.Shape...)
			if err := be.Attention(y, q, k, v, c.heads, c.causal); err != nil {
				t.Fatal(err)
			}
			check()
			// max Σ|q||k|/√D <= D·scale²/√D; max|v| <= 1.
			es := (2*bf16U + float64(c.d)*math.Pow(2, -24)) * float64(c.d) * float64(c.scale*c.scale) / math.Sqrt(float64(c.d))
			bound := 2*es + 3*bf16U + 1e-5
			worst := 0.0
			for i := range want.F32 {
				d := math.Abs(float64(y.F32[i]) - float64(want.F32[i]))
				if !(d <= bound) {
					t.Fatalf("case %d: [%d] = %v, want %v (bound %.3g)", ci, i, y.F32[i], want.F32[i], bound)
				}
				worst = max(worst, d)
			}
			if !differs(y.F32, want.F32) {
				t.Fatalf("case %d: bf16 result equals the exact one", ci)
			}
			t.Logf("case %d: max abs error %.2g (bound %.2g)", ci, worst, bound)
		}
	})
}

// TestCPUBF16MappedWeight runs bf16 Linear on a weight in a read-only file
// mapping (as checkpoints are loaded): packing it into the cache releases
// the mapping's resident pages, which must read back unchanged (the f32
// result after the bf16 calls equals the one before).
func TestCPUBF16MappedWeight(t *testing.T) {
	rng := rand.New(rand.NewSource(14))
	const m, k, n = 8, 4096, 2048 // a 16 MiB weight: large page-cache folios (up to 2 MiB) come back whole when read
	w := asDType(randF32(rng, -1, 1, n, k), F16)
	path := filepath.Join(t.TempDir(), "w.bin")
	buf := make([]byte, 2*len(w.Half))
	for i, h := range w.Half {
		binary.LittleEndian.PutUint16(buf[2*i:], h)
	}
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := syscall.Mmap(int(f.Fd()), 0, len(buf), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	mw := FromHalf(unsafe.Slice((*uint16)(unsafe.Pointer(&mem[0])), len(w.Half)), F16, n, k)
	x := randF32(rng, -1, 1, m, k)
	be := NewCPU()
	before, after := New(m, n), New(m, n)
	if err := be.Linear(before, x, mw, nil); err != nil {
		t.Fatal(err)
	}
	addr := uint64(uintptr(unsafe.Pointer(&mem[0])))
	rss0 := mappedRSS(t, addr)
	withBF16(t, func(be *CPU) {
		want, scale, y := New(m, n), New(m, n), New(m, n)
		if err := NewRef().Linear(want, x, w, nil); err != nil {
			t.Fatal(err)
		}
		if err := NewRef().Linear(scale, absT(x), absT(w), nil); err != nil {
			t.Fatal(err)
		}
		for rep := 0; rep < 2; rep++ {
			if err := be.Linear(y, x, mw, nil); err != nil {
				t.Fatal(err)
			}
			boundCheck(t, "mapped", y.F32, want.F32, scale.F32, k)
		}
		rss1 := mappedRSS(t, addr)
		t.Logf("resident pages of the mapped weight: %d kB before packing, %d kB after", rss0, rss1)
		if rss0 < 15000 || rss1 > rss0/3 {
			t.Fatalf("mapped weight resident %d kB before, %d kB after packing: pages not released", rss0, rss1)
		}
	})
	if err := be.Linear(after, x, mw, nil); err != nil {
		t.Fatal(err)
	}
	exact(t, "f32 after bf16", after.F32, before.F32)
}

// mappedRSS returns the resident kB of the mapping that starts at addr (from /proc/self/smaps).
func mappedRSS(t *testing.T, addr uint64) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if lo, _, ok := strings.Cut(line, "-"); ok && !strings.Contains(lo, " ") && !strings.Contains(line, ":") == false {
			if v, err := strconv.ParseUint(lo, 16, 64); err == nil {
				in = v == addr
				continue
			}
		}
		if in && strings.HasPrefix(line, "Rss:") {
			v, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "Rss:"), "kB")))
			return v
		}
	}
	t.Fatalf("mapping at %#x not in /proc/self/smaps", addr)
	return 0
}

// TestCPUBF16CacheSeesChangedWeight changes a weight in place between two
// bf16 calls (as an in-place LoRA merge would): the cached panels must not be
// reused.
func TestCPUBF16CacheSeesChangedWeight(t *testing.T) {
	rng := rand.New(rand.NewSource(15))
	x := randF32(rng, -1, 1, 30, 200)
	w := asDType(randF32(rng, -1, 1, 50, 200), F16)
	withBF16(t, func(be *CPU) {
		y1, y2 := New(30, 50), New(30, 50)
		if err := be.Linear(y1, x, w, nil); err != nil {
			t.Fatal(err)
		}
		for i := range w.Half {
			w.Half[i] ^= 0x8000 // negate every weight
		}
		if err := be.Linear(y2, x, w, nil); err != nil {
			t.Fatal(err)
		}
		for i := range y1.F32 {
			if y2.F32[i] != -y1.F32[i] {
				t.Fatalf("[%d] = %v after negating the weight, want %v (stale cached panels)", i, y2.F32[i], -y1.F32[i])
			}
		}
	})
}

func TestCPUBF16ReleaseWeights(t *testing.T) {
	rng := rand.New(rand.NewSource(16))
	x := randF32(rng, -1, 1, 30, 200)
	w1 := asDType(randF32(rng, -1, 1, 50, 200), F16)
	w2 := asDType(randF32(rng, -1, 1, 40, 200), F16)
	withBF16(t, func(be *CPU) {
		ClearCPUWeightCache()
		want := New(30, 50)
		for _, w := range []*Tensor{w1, w2} {
			if err := be.Linear(New(30, w.Shape[0]), x, w, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := be.Linear(want, x, w1, nil); err != nil {
			t.Fatal(err)
		}
		both := SetCPUWeightCache(-1)
		freed := ReleaseCPUWeights([]*Tensor{w1, nil})
		left := SetCPUWeightCache(-1)
		if freed <= 0 || left != both-freed || left <= 0 {
			t.Fatalf("cache %d bytes, released %d, left %d: want w1's panels gone and w2's kept", both, freed, left)
		}
		got := New(30, 50)
		if err := be.Linear(got, x, w1, nil); err != nil { // packed again
			t.Fatal(err)
		}
		for i := range got.F32 {
			if got.F32[i] != want.F32[i] {
				t.Fatalf("[%d] = %v after release and repack, want %v", i, got.F32[i], want.F32[i])
			}
		}
		if SetCPUWeightCache(-1) != both {
			t.Fatalf("cache %d bytes after repacking, want %d", SetCPUWeightCache(-1), both)
		}
		ClearCPUWeightCache()
	})
}

// winogradBound returns, per output of a 3x3 stride-1 pad-1 convolution of
// x [B, C, H, W] with w [O, C, 3, 3], the sum over channels and the 16
// transformed positions of |Aᵀ|·(|G||g||G|ᵀ ⊙ |Bᵀ||d||B|)·|A|: the scale of
// the rounding errors of F(2x2, 3x3) with bf16 operands, as Σ|x·w| is for
// the direct product.
func winogradBound(x, w *Tensor) []float64 {
	bs, c, h, wd, o := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3], w.Shape[0]
	G := [4][3]float64{{1, 0, 0}, {.5, .5, .5}, {.5, .5, .5}, {0, 0, 1}} // |G|
	BT := [4][4]float64{{1, 0, 1, 0}, {0, 1, 1, 0}, {0, 1, 1, 0}, {0, 1, 0, 1}}
	A := [2][4]float64{{1, 1, 1, 0}, {0, 1, 1, 1}}
	wf := w.Float32s()
	U := make([][16]float64, o*c)
	for oc := range U {
		var gg [4][3]float64
		for u := 0; u < 4; u++ {
			for j := 0; j < 3; j++ {
				for r := 0; r < 3; r++ {
					gg[u][j] += G[u][r] * math.Abs(float64(wf[oc*9+r*3+j]))
				}
			}
		}
		for u := 0; u < 4; u++ {
			for v := 0; v < 4; v++ {
				for j := 0; j < 3; j++ {
					U[oc][u*4+v] += gg[u][j] * G[v][j]
				}
			}
		}
	}
	out := make([]float64, bs*o*h*wd)
	for n := 0; n < bs; n++ {
		for ty := 0; ty < (h+1)/2; ty++ {
			for tx := 0; tx < (wd+1)/2; tx++ {
				for ci := 0; ci < c; ci++ {
					var d [4][4]float64
					for k := 0; k < 4; k++ {
						for s := 0; s < 4; s++ {
							if r, q := 2*ty-1+k, 2*tx-1+s; r >= 0 && r < h && q >= 0 && q < wd {
								d[k][s] = math.Abs(float64(x.F32[((n*c+ci)*h+r)*wd+q]))
							}
						}
					}
					var V [16]float64
					for u := 0; u < 4; u++ {
						for v := 0; v < 4; v++ {
							for k := 0; k < 4; k++ {
								for s := 0; s < 4; s++ {
									V[u*4+v] += BT[u][k] * d[k][s] * BT[v][s]
								}
							}
						}
					}
					for oc := 0; oc < o; oc++ {
						for i := 0; i < 2 && 2*ty+i < h; i++ {
							for j := 0; j < 2 && 2*tx+j < wd; j++ {
								s := 0.0
								for xi := 0; xi < 16; xi++ {
									s += A[i][xi/4] * A[j][xi%4] * U[oc*c+ci][xi] * V[xi]
								}
								out[((n*o+oc)*h+2*ty+i)*wd+2*tx+j] += s
							}
						}
					}
				}
			}
		}
	}
	return out
}

// TestCPUBF16ConvWinograd: 3x3 stride-1 convolutions wide enough for
// F(2x2, 3x3) (rows of at least 16 tiles) agree with the float64 reference
// within the bf16 rounding bound of the Winograd products, including odd
// sizes, an odd channel count, part-filled runs and blocks, and batches.
func TestCPUBF16ConvWinograd(t *testing.T) {
	testWinograd(t, []convCase{
		{1, 16, 6, 64, 20},  // 32 tiles a row: two runs of 16
		{2, 17, 9, 67, 13},  // odd sizes and channels; last run of 2 tiles
		{1, 40, 5, 96, 25},  // 48 tiles a row: blocks across rows, half-empty last block
		{1, 130, 3, 70, 12}, // deep
		{2, 24, 7, 32, 16},  // 16 tiles a row: a block is two rows
		{1, 8, 8, 45, 30},   // 23 tiles a row: runs of 16 and 7
	})
}

// TestCPUBF16ConvWinogradGathered: with GOSD_WINOGRAD=all, rows of fewer
// than 16 tiles run Winograd too, on runs gathered across tile rows.
func TestCPUBF16ConvWinogradGathered(t *testing.T) {
	t.Setenv("GOSD_WINOGRAD", "all")
	testWinograd(t, []convCase{
		{1, 32, 16, 16, 40}, // 8 tiles a row: a run is two rows
		{2, 20, 7, 9, 14},   // 4x5 tiles, odd sizes, a part-filled run
		{1, 64, 8, 8, 24},   // 4 tiles a row
		{1, 12, 30, 29, 10}, // 15 tiles a row: runs across row ends
		{1, 9, 1, 3, 5},     // one tile, odd channels
	})
}

type convCase struct{ b, c, h, w, o int }

func testWinograd(t *testing.T, cases []convCase) {
	rng := rand.New(rand.NewSource(17))
	ref := NewRef()
	withBF16(t, func(be *CPU) {
		for ci, c := range cases {
			x := randF32(rng, -1, 1, c.b, c.c, c.h, c.w)
			w := asDType(randF32(rng, -1, 1, c.o, c.c, 3, 3), F16)
			bias := asDType(randF32(rng, -1, 1, c.o), F16)
			want := New(c.b, c.o, c.h, c.w)
			if err := ref.Conv2D(want, x, w, bias, Pad(1, 1)); err != nil {
				t.Fatal(err)
			}
			bound := winogradBound(x, w)
			tol := 2*bf16U + bf16U*bf16U + float64(c.c+16)*math.Pow(2, -24)
			for rep := 0; rep < 2; rep++ {
				y, check := guarded(t, c.b, c.o, c.h, c.w)
				if err := be.Conv2D(y, x, w, bias, Pad(1, 1)); err != nil {
					t.Fatal(err)
				}
				check()
				worst := 0.0
				for i := range y.F32 {
					e := math.Abs(float64(y.F32[i]) - float64(want.F32[i]))
					if e > tol*bound[i]+1e-6 {
						t.Fatalf("case %d [%d]: %v, want %v (error %.3g > bound %.3g)", ci, i, y.F32[i], want.F32[i], e, tol*bound[i])
					}
					worst = max(worst, e/bound[i])
				}
				if !differs(y.F32, want.F32) {
					t.Fatalf("case %d: bf16 result equals the exact one", ci)
				}
				t.Logf("case %d: max error %.2g of the Winograd scale", ci, worst)
			}
		}
	})
}
