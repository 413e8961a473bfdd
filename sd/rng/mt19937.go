package rng

// mt19937 is the 32-bit Mersenne Twister (Matsumoto and Nishimura 1998),
// seeded like PyTorch's at::mt19937 and std::mt19937 from the low 32 bits of
// the seed.
type mt19937 struct {
	state [mtN]uint32
	i     int
}

const (
	mtN = 624
	mtM = 397
)

func newMT19937(seed uint64) *mt19937 {
	m := &mt19937{i: mtN}
	m.state[0] = uint32(seed)
	for j := 1; j < mtN; j++ {
		p := m.state[j-1]
		m.state[j] = 1812433253*(p^(p>>30)) + uint32(j)
	}
	return m
}

// next returns the next tempered 32-bit output.
func (m *mt19937) next() uint32 {
	if m.i >= mtN {
		m.twist()
	}
	y := m.state[m.i]
	m.i++
	y ^= y >> 11
	y ^= (y << 7) & 0x9D2C5680
	y ^= (y << 15) & 0xEFC60000
	y ^= y >> 18
	return y
}

func (m *mt19937) twist() {
	for j := 0; j < mtN; j++ {
		y := m.state[j]&0x80000000 | m.state[(j+1)%mtN]&0x7FFFFFFF
		v := m.state[(j+mtM)%mtN] ^ y>>1
		if y&1 != 0 {
			v ^= 0x9908B0DF
		}
		m.state[j] = v
	}
	m.i = 0
}
