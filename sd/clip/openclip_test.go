package clip

import (
	"math"
	"strconv"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// naiveOpenCLIP is a float64 reading of open_clip's TextTransformer written
// from its definition, independent of TextModel: it returns, per sequence,
// the hidden state after `layers` resblocks (with ln_final when final) and
// the pooled projection (all layers, ln_final, argmax-token row @ text_projection).
type naiveOpenCLIP struct {
	get    func(string) []float64
	shape  func(string) []int
	prefix string
}

func (n *naiveOpenCLIP) w(name string) []float64 { return n.get(n.prefix + name) }

func layerNorm(x []float64, g, b []float64) []float64 {
	var mean, v float64
	for _, e := range x {
		mean += e
	}
	mean /= float64(len(x))
	for _, e := range x {
		v += (e - mean) * (e - mean)
	}
	v /= float64(len(x))
	out := make([]float64, len(x))
	for i, e := range x {
		out[i] = (e-mean)/math.Sqrt(v+1e-5)*g[i] + b[i]
	}
	return out
}

// affine: W [out, in] row-major, returns W x + b.
func affine(W, b, x []float64, out int) []float64 {
	in := len(x)
	y := make([]float64, out)
	for o := 0; o < out; o++ {
		s := b[o]
		for i := 0; i < in; i++ {
			s += W[o*in+i] * x[i]
		}
		y[o] = s
	}
	return y
}

func (n *naiveOpenCLIP) run(ids []int, layers int, final bool) (hidden [][]float64, pooled []float64) {
	C := n.shape(n.prefix + "token_embedding.weight")[1]
	tok, pos := n.w("token_embedding.weight"), n.w("positional_embedding")
	L := len(ids)
	x := make([][]float64, L)
	for i, id := range ids {
		x[i] = make([]float64, C)
		for j := range C {
			x[i][j] = tok[id*C+j] + pos[i*C+j]
		}
	}
	total := 0
	for n.shape(n.prefix+"transformer.resblocks."+itoa(total)+".ln_1.weight") != nil {
		total++
	}
	heads := C / 64
	dh := C / heads
	for l := 0; l < total; l++ {
		if l == layers {
			hidden = clone(x)
		}
		p := "transformer.resblocks." + itoa(l) + "."
		win, bin := n.w(p+"attn.in_proj_weight"), n.w(p+"attn.in_proj_bias")
		q, k, v := make([][]float64, L), make([][]float64, L), make([][]float64, L)
		for i := range L {
			h := layerNorm(x[i], n.w(p+"ln_1.weight"), n.w(p+"ln_1.bias"))
			qkv := affine(win, bin, h, 3*C)
			q[i], k[i], v[i] = qkv[:C], qkv[C:2*C], qkv[2*C:]
		}
		att := make([][]float64, L)
		for i := range L {
			att[i] = make([]float64, C)
			for hd := 0; hd < heads; hd++ {
				s := make([]float64, i+1) // causal: keys 0..i
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					for d := 0; d < dh; d++ {
						s[j] += q[i][hd*dh+d] * k[j][hd*dh+d]
					}
					s[j] /= math.Sqrt(float64(dh))
					mx = math.Max(mx, s[j])
				}
				var z float64
				for j := range s {
					s[j] = math.Exp(s[j] - mx)
					z += s[j]
				}
				for j := range s {
					for d := 0; d < dh; d++ {
						att[i][hd*dh+d] += s[j] / z * v[j][hd*dh+d]
					}
				}
			}
		}
		ff := n.shape(n.prefix + p + "mlp.c_fc.weight")[0]
		for i := range L {
			o := affine(n.w(p+"attn.out_proj.weight"), n.w(p+"attn.out_proj.bias"), att[i], C)
			for j := range C {
				x[i][j] += o[j]
			}
			h := layerNorm(x[i], n.w(p+"ln_2.weight"), n.w(p+"ln_2.bias"))
			h = affine(n.w(p+"mlp.c_fc.weight"), n.w(p+"mlp.c_fc.bias"), h, ff)
			for j, e := range h {
				h[j] = e / 2 * (1 + math.Erf(e/math.Sqrt2))
			}
			h = affine(n.w(p+"mlp.c_proj.weight"), n.w(p+"mlp.c_proj.bias"), h, C)
			for j := range C {
				x[i][j] += h[j]
			}
		}
	}
	if hidden == nil {
		hidden = clone(x)
	}
	if final {
		for i := range hidden {
			hidden[i] = layerNorm(hidden[i], n.w("ln_final.weight"), n.w("ln_final.bias"))
		}
	}
	eot := 0
	for i, id := range ids {
		if id > ids[eot] {
			eot = i
		}
	}
	f := layerNorm(x[eot], n.w("ln_final.weight"), n.w("ln_final.bias"))
	proj := n.w("text_projection")
	P := n.shape(n.prefix + "text_projection")[1]
	pooled = make([]float64, P)
	for j := range P {
		for i := range C {
			pooled[j] += f[i] * proj[i*P+j]
		}
	}
	return hidden, pooled
}

func clone(x [][]float64) [][]float64 {
	out := make([][]float64, len(x))
	for i := range x {
		out[i] = append([]float64(nil), x[i]...)
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestOpenCLIPAgainstNaive compares the OpenCLIP text model (hidden states
// with and without ln_final at two depths, and the pooled output) with the
// float64 naive reading on the tiny SDXL bigG-shaped model (128 wide, 2
// heads, 3 layers, projection 128 -> 64) with weights of std 0.2, on the
// reference and native CPU backends.
func TestOpenCLIPAgainstNaive(t *testing.T) {
	src, err := testmodel.NewSource(testmodel.Options{Family: "sdxl", Size: "tiny", DType: tensor.F32, Seed: 11, Std: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	prefix := OpenCLIPPrefixSDXL
	n := &naiveOpenCLIP{prefix: prefix,
		get: func(name string) []float64 {
			tt, ok := src.Get(name)
			if !ok {
				t.Fatalf("no %s", name)
			}
			out := make([]float64, len(tt.F32))
			for i, v := range tt.F32 {
				out[i] = float64(v)
			}
			return out
		},
		shape: func(name string) []int {
			if tt, ok := src.Get(name); ok {
				return tt.Shape
			}
			return nil
		}}
	ids := [][]int{{49406, 320, 1125, 539, 49407, 0, 0, 0}, {49406, 7, 49407, 49407, 49407, 49407, 49407, 49407}}
	for _, be := range []tensor.Backend{tensor.NewRef(), tensor.NewCPU()} {
		oc, err := LoadOpenCLIP(src, prefix, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if oc.Config.Heads != 2 || oc.Config.Layers != 3 || oc.Config.Act != tensor.GELU {
			t.Fatalf("config %+v", oc.Config)
		}
		pooled, err := oc.Pooled(be, ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			skip  int
			final bool
		}{{1, true}, {2, false}, {2, true}} {
			oc.SkipFinalNorm = !c.final
			got, err := oc.Encode(be, ids, c.skip)
			if err != nil {
				t.Fatal(err)
			}
			var worst float64
			for b, seq := range ids {
				hidden, pool := n.run(seq, 3-(c.skip-1), c.final)
				for i := range hidden {
					for j, w := range hidden[i] {
						g := float64(got.F32[(b*len(seq)+i)*128+j])
						worst = math.Max(worst, math.Abs(g-w)/(1+math.Abs(w)))
					}
				}
				for j, w := range pool {
					g := float64(pooled.F32[b*64+j])
					if math.Abs(g-w) > 1e-4*(1+math.Abs(w)) {
						t.Fatalf("%s: pooled[%d][%d] = %v, want %v", be.Name(), b, j, g, w)
					}
				}
			}
			if worst > 1e-4 {
				t.Errorf("%s skip %d final %v: worst relative error %.3g", be.Name(), c.skip, c.final, worst)
			}
			t.Logf("%s skip %d final %v: worst relative error %.3g", be.Name(), c.skip, c.final, worst)
		}
	}
}
