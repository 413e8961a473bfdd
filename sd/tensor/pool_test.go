package tensor

import (
	"math"
	"math/rand"
	"testing"
	"time"
)

func TestPoolReusesReleasedBuffers(t *testing.T) {
	TrimPool()
	a := Empty(3, 5)
	if len(a.F32) != 15 || a.Shape[0] != 3 || a.Shape[1] != 5 {
		t.Fatalf("Empty(3, 5) = %v with %d values", a.Shape, len(a.F32))
	}
	Release(a, a, nil) // twice: taken once
	b := Empty(5, 3)
	if &b.F32[0] != &a.F32[0] {
		t.Fatal("Empty did not reuse the released buffer of the same length")
	}
	if c := Empty(15); &c.F32[0] == &a.F32[0] {
		t.Fatal("a buffer released once was handed out twice")
	}
	if d := Empty(16); len(d.F32) != 16 {
		t.Fatalf("Empty(16) has %d values", len(d.F32))
	}
	Release(FromHalf(make([]uint16, 4), F16, 4)) // not f32: ignored
	if n := TrimPool(); n != 0 {
		t.Fatalf("TrimPool: %d bytes pooled, want 0 (every f32 buffer was taken back)", n)
	}
	Release(New(7))
	if n := TrimPool(); n != 28 {
		t.Fatalf("TrimPool after releasing 7 floats: %d bytes, want 28", n)
	}
}

func TestPoolPoison(t *testing.T) {
	TrimPool()
	PoisonPool(true)
	defer PoisonPool(false)
	a := New(4)
	Release(a)
	for i, v := range a.F32 {
		if !math.IsNaN(float64(v)) {
			t.Fatalf("released buffer [%d] = %v, want NaN", i, v)
		}
	}
	TrimPool()
}

func TestProfileCountsCallsAndFlops(t *testing.T) {
	p := NewProfile(NewRef())
	rng := rand.New(rand.NewSource(1))
	x, w := randF32(rng, -1, 1, 6, 10), randF32(rng, -1, 1, 4, 10)
	for i := 0; i < 3; i++ {
		if err := p.Linear(New(6, 4), x, w, nil); err != nil {
			t.Fatal(err)
		}
	}
	img, k := randF32(rng, -1, 1, 2, 3, 5, 5), randF32(rng, -1, 1, 8, 3, 3, 3)
	if err := p.Conv2D(New(2, 8, 3, 3), img, k, nil, Pad(2, 1)); err != nil {
		t.Fatal(err)
	}
	q := randF32(rng, -1, 1, 1, 7, 8)
	kv := randF32(rng, -1, 1, 1, 5, 8)
	if err := p.Attention(New(1, 7, 8), q, kv, kv, 2, false); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(New(6, 4), New(6, 4), New(6, 4)); err != nil {
		t.Fatal(err)
	}
	if err := p.Linear(New(6, 5), x, w, nil); err == nil { // a wrong shape is not recorded
		t.Fatal("Linear into a misshapen y succeeded")
	}
	want := map[string][2]float64{ // calls, flops
		"linear":          {3, 3 * 2 * 6 * 4 * 10},
		"conv2d 3x3/2":    {1, 2 * (2 * 8 * 3 * 3) * (3 * 3 * 3)},
		"attention cross": {1, 4 * 7 * 8 * 5},
		"add":             {1, 0},
	}
	st := p.Stats()
	if len(st) != len(want) {
		t.Fatalf("%d kinds recorded, want %d: %+v", len(st), len(want), st)
	}
	var sum time.Duration
	for i, s := range st {
		w, ok := want[s.Kind]
		if !ok || float64(s.Calls) != w[0] || s.Flops != w[1] {
			t.Errorf("%s: %d calls, %v flops; want %v", s.Kind, s.Calls, s.Flops, w)
		}
		if i > 0 && s.Time > st[i-1].Time {
			t.Errorf("rows not sorted by time: %v after %v", s.Time, st[i-1].Time)
		}
		sum += s.Time
	}
	if sum != p.Total() || sum <= 0 {
		t.Errorf("Total %v, rows sum to %v", p.Total(), sum)
	}
	p.Reset()
	if len(p.Stats()) != 0 || p.Total() != 0 {
		t.Error("Reset kept rows")
	}
}

// TestCPUWorkTime: the kernels' work counter grows by the threads' working
// time: on one thread by about each call's duration (the call is the
// region's body; checked loosely, at half, as the tests may share the
// cores), on all threads by at most threads x wall.
func TestCPUWorkTime(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	be := NewCPU()
	defer be.SetThreads(0)
	x, w, y := randF32(rng, -1, 1, 384, 512), randF32(rng, -1, 1, 512, 512), New(384, 512)
	for _, threads := range []int{1, 0} {
		be.SetThreads(threads)
		var calls time.Duration
		w0, t0 := CPUWorkTime(), time.Now()
		for i := 0; i < 20; i++ {
			c0 := time.Now()
			if err := be.Linear(y, x, w, nil); err != nil {
				t.Fatal(err)
			}
			calls += time.Since(c0)
		}
		wall, work := time.Since(t0), CPUWorkTime()-w0
		t.Logf("%d threads: wall %v (in calls %v), work %v", be.Threads(), wall, calls, work)
		if work <= 0 || work > time.Duration(be.Threads())*wall+time.Millisecond {
			t.Fatalf("%d threads: work %v for wall %v", be.Threads(), work, wall)
		}
		if threads == 1 && work < calls/2 {
			t.Fatalf("one thread: work %v for %v inside the calls", work, calls)
		}
	}
}
