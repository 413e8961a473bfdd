package tensor

import "testing"

// TestSizeClass: a pool block is at least the request, at most 25% (or
// 4 KiB) larger, and equal requests and neighbours share classes.
func TestSizeClass(t *testing.T) {
	prev := 0
	classes := map[int]bool{}
	for b := 1; b < 1<<28; b = b*9/8 + 1 {
		c := sizeClass(b)
		if c < b || (b > 4096 && 4*c > 5*b) || (b <= 4096 && c != 4096) || c%1024 != 0 || c < prev {
			t.Fatalf("sizeClass(%d) = %d (previous class %d)", b, c, prev)
		}
		prev = c
		classes[c] = true
	}
	if c := sizeClass(10 << 20); c != 10<<20 {
		t.Errorf("sizeClass(10 MiB) = %d, want 10 MiB (a class boundary)", c)
	}
	if c := sizeClass(10<<20 + 1); c != 12<<20 {
		t.Errorf("sizeClass(10 MiB + 1) = %d, want 12 MiB", c)
	}
	if len(classes) > 120 {
		t.Errorf("%d classes below 256 MiB; four per octave should give under 100", len(classes))
	}
}
