package bench

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Chart draws a horizontal-free bar chart of kernel GFLOP/s per shape, with
// the peaks as reference lines, and saves it as a PNG at path.
func Chart(path string, results []KernelResult, info CPUInfo) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("gosd CPU kernels on SD 1.5 shapes (%d cores, %s)", info.Cores, info.Model)
	p.Y.Label.Text = "GFLOP/s (conv3x3: direct-convolution flops; bf16 runs Winograd where it can)"
	vals := make(plotter.Values, len(results))
	names := make([]string, len(results))
	for i, r := range results {
		vals[i] = r.GFLOPS
		names[i] = r.Op + " " + r.Shape
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(18))
	if err != nil {
		return err
	}
	p.Add(bars)
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = 0.8
	p.X.Tick.Label.XAlign = -1
	for _, pk := range []struct {
		name string
		v    float64
	}{{"f32 FMA peak", info.PeakF32()}, {"bf16 peak", info.PeakBF16()}} {
		if pk.v <= 0 {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: -0.5, Y: pk.v}, {X: float64(len(results)) - 0.5, Y: pk.v}})
		if err != nil {
			return err
		}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s %.0f GFLOP/s", pk.name, pk.v), l)
	}
	p.Legend.Top = true
	return p.Save(vg.Points(40*float64(len(results))+200), 5*vg.Inch, path)
}
