//go:build cuda

package sd

import "github.com/gosd/gosd/sd/tensor"

// In a cuda-tagged build, "cuda" selects the GPU given by Options.Device.
func init() {
	backendFactories["cuda"] = func(o backendOpts) (tensor.Backend, error) { return tensor.NewCUDA(o.device) }
}
