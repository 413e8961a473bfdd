package bench

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/gosd/gosd/bindings/cpu"
)

// CPUInfo describes the processor and the theoretical peaks derived from it.
type CPUInfo struct {
	Vendor string  `json:"vendor"` // "AuthenticAMD", "GenuineIntel", ...
	Model  string  `json:"model"`
	Cores  int     `json:"cores"` // cores used by the kernels
	MHz    float64 `json:"mhz"`   // nominal clock read from /proc/cpuinfo
	// MeasuredMHz is the clock measured by MeasureClock (0 until then): a
	// chain of dependent integer adds (one per cycle on every x86 core) timed
	// on one thread; the peaks use it when set.
	MeasuredMHz float64 `json:"measured_mhz"`
	// FMAGFLOPS is one thread's measured AVX-512 f32 FMA throughput;
	// FMAGFLOPS / F32FlopPerCycle is a second reading of the clock.
	FMAGFLOPS float64 `json:"fma_gflops_1thread"`
	AVX512    bool    `json:"avx512"`
	BF16      bool    `json:"avx512_bf16"`
	AMX       bool    `json:"amx_bf16"`
	// Flop per cycle per core of the widest f32 FMA path, the AVX512-BF16
	// dot-product path and the AMX-BF16 tile path (0 when absent).
	F32FlopPerCycle  float64 `json:"f32_flop_per_cycle"`
	BF16FlopPerCycle float64 `json:"bf16_flop_per_cycle"`
	AMXFlopPerCycle  float64 `json:"amx_flop_per_cycle"`
	// PeakNote says how the peaks were derived.
	PeakNote string `json:"peak_note"`
}

// ClockMHz is the clock the peaks use: MeasuredMHz if measured, else the
// nominal MHz.
func (c CPUInfo) ClockMHz() float64 {
	if c.MeasuredMHz > 0 {
		return c.MeasuredMHz
	}
	return c.MHz
}

// PeakF32 is the f32 FMA peak of the cores used, in GFLOP/s.
func (c CPUInfo) PeakF32() float64 {
	return float64(c.Cores) * c.F32FlopPerCycle * c.ClockMHz() / 1e3
}

// PeakBF16 is the best bf16 peak (AMX if present, else AVX512-BF16), in GFLOP/s.
func (c CPUInfo) PeakBF16() float64 {
	fpc := max(c.AMXFlopPerCycle, c.BF16FlopPerCycle)
	return float64(c.Cores) * fpc * c.ClockMHz() / 1e3
}

// MeasureClock measures the clock for about seconds (see MeasuredMHz and
// FMAGFLOPS) and rewrites PeakNote to say the peaks use it. The
// /proc/cpuinfo figure is the nominal clock (2596 MHz on the EPYC this was
// written on, which runs at about 3.7 GHz under load), so peaks from it
// are too low.
func (c *CPUInfo) MeasureClock(seconds float64) error {
	ghz, gflops, err := cpu.Probe(seconds)
	if err != nil {
		return err
	}
	c.MeasuredMHz, c.FMAGFLOPS = ghz*1e3, gflops
	c.PeakNote = strings.Replace(c.PeakNote, fmt.Sprintf("%.0f MHz (cpu MHz in /proc/cpuinfo)", c.MHz),
		fmt.Sprintf("%.0f MHz (measured: dependent-add chain, one add per cycle; nominal %.0f MHz", c.MeasuredMHz, c.MHz), 1)
	if gflops > 0 && c.F32FlopPerCycle > 0 {
		fmaMHz := gflops / c.F32FlopPerCycle * 1e3
		c.PeakNote += fmt.Sprintf("; one thread's FMA rate %.0f GFLOP/s = %.0f MHz x %.0f flop/cycle)", gflops, fmaMHz, c.F32FlopPerCycle)
		if math.Abs(fmaMHz-c.MeasuredMHz) > 0.15*c.MeasuredMHz {
			c.PeakNote += "; the two clock readings disagree: the cores were busy with other work, so these figures are unreliable"
		}
	} else {
		c.PeakNote += ")"
	}
	return nil
}

// ReadCPUInfo reads /proc/cpuinfo and derives the peaks for cores cores.
//
// Flop per cycle per core, from the vendors' optimisation manuals:
//   - Intel server cores with two 512-bit FMA ports (Skylake-SP and later):
//     2 ports x 16 f32 lanes x 2 = 64 f32 flop; VDPBF16PS does two
//     products per f32 lane, so 128 bf16 flop; AMX TDPBF16PS retires a
//     16x16x32 tile product (16384 flop) every 16 cycles = 1024 flop.
//   - AMD Zen 4: AVX-512 runs on two 256-bit FMA pipes, so 2 x 8 x 2 = 32
//     f32 flop and 64 bf16 flop per cycle; no AMX.
//   - Other x86 with AVX2/FMA: 2 x 8 x 2 = 32 f32 flop.
func ReadCPUInfo(cores int) (CPUInfo, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return CPUInfo{}, err
	}
	defer f.Close()
	c := CPUInfo{Cores: cores}
	var flags map[string]bool
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "vendor_id":
			if c.Vendor == "" {
				c.Vendor = v
			}
		case "model name":
			if c.Model == "" {
				c.Model = v
			}
		case "cpu MHz":
			if c.MHz == 0 {
				c.MHz, _ = strconv.ParseFloat(v, 64)
			}
		case "flags":
			if flags == nil {
				flags = map[string]bool{}
				for _, fl := range strings.Fields(v) {
					flags[fl] = true
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if c.MHz == 0 {
		return c, fmt.Errorf("bench: no clock in /proc/cpuinfo")
	}
	c.AVX512, c.BF16, c.AMX = flags["avx512f"], flags["avx512_bf16"], flags["amx_bf16"]
	switch {
	case c.Vendor == "GenuineIntel" && c.AVX512:
		c.F32FlopPerCycle = 64
		c.PeakNote = "Intel, two 512-bit FMA ports: 64 f32 flop/cycle/core"
	case c.AVX512: // AMD Zen 4 and similar: 512-bit ops on 256-bit pipes
		c.F32FlopPerCycle = 32
		c.PeakNote = "AVX-512 on two 256-bit FMA pipes (AMD Zen 4): 32 f32 flop/cycle/core"
	default:
		c.F32FlopPerCycle = 32
		c.PeakNote = "AVX2 FMA, two 256-bit pipes: 32 f32 flop/cycle/core"
	}
	if c.BF16 {
		c.BF16FlopPerCycle = 2 * c.F32FlopPerCycle
		c.PeakNote += "; VDPBF16PS: 2x that in bf16"
	}
	if c.AMX {
		c.AMXFlopPerCycle = 1024
		c.PeakNote += "; AMX-BF16: 1024 flop/cycle/core"
	}
	c.PeakNote += fmt.Sprintf("; x %d cores x %.0f MHz (cpu MHz in /proc/cpuinfo)", cores, c.MHz)
	return c, nil
}
