// Package device discovers NVIDIA GPUs through NVML (NVIDIA's go-nvml, which
// loads libnvidia-ml at run time, so this package builds and runs on machines
// without a driver) and estimates how much device memory an SD 1.5 run needs.
package device

import (
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gosd/gosd/sd/tensor"
)

// ErrNoDriver means no NVIDIA driver is installed or loaded (libnvidia-ml
// could not be opened or NVML found no driver). Programs report it as
// "no NVIDIA driver found" and treat it as a normal outcome.
var ErrNoDriver = errors.New("no NVIDIA driver found")

// ErrInsufficientMemory is wrapped by CheckFits when a run does not fit.
var ErrInsufficientMemory = errors.New("not enough free device memory")

// GPU describes one NVIDIA GPU as NVML reports it.
type GPU struct {
	Index         int    // NVML index (usually the CUDA device number)
	Name          string // e.g. "NVIDIA H200"
	DriverVersion string // e.g. "570.86.15"
	CUDAVersion   string // highest CUDA version the driver supports, e.g. "12.8"
	TotalBytes    uint64 // device memory
	FreeBytes     uint64 // device memory not yet allocated by any process
}

// nvmlLib is the part of nvml.Interface that List uses; tests pass a mock.
type nvmlLib interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
	SystemGetDriverVersion() (string, nvml.Return)
	SystemGetCudaDriverVersion() (int, nvml.Return)
}

// List returns every NVIDIA GPU with its memory and the driver's versions.
// Without a driver it returns ErrNoDriver; with a driver and no GPU, an
// empty list.
func List() ([]GPU, error) { return list(nvml.New()) }

func list(lib nvmlLib) ([]GPU, error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND || ret == nvml.ERROR_DRIVER_NOT_LOADED {
			return nil, ErrNoDriver
		}
		return nil, fmt.Errorf("device: NVML init: %s", ret.Error())
	}
	defer lib.Shutdown()
	driver, ret := lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("device: NVML driver version: %s", ret.Error())
	}
	cv, ret := lib.SystemGetCudaDriverVersion()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("device: NVML CUDA version: %s", ret.Error())
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("device: NVML device count: %s", ret.Error())
	}
	gpus := make([]GPU, 0, n)
	for i := 0; i < n; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("device: GPU %d: NVML handle: %s", i, ret.Error())
		}
		name, ret := d.GetName()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("device: GPU %d: NVML name: %s", i, ret.Error())
		}
		mem, ret := d.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("device: GPU %d (%s): NVML memory info: %s", i, name, ret.Error())
		}
		gpus = append(gpus, GPU{Index: i, Name: name, DriverVersion: driver, CUDAVersion: cudaVersion(cv),
			TotalBytes: mem.Total, FreeBytes: mem.Free})
	}
	return gpus, nil
}

// cudaVersion formats NVML's 1000*major + 10*minor as "major.minor".
func cudaVersion(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

// Parameter counts of SD 1.5's parts, from the original single-file
// checkpoint (v1-5-pruned-emaonly): the UNet, the CLIP ViT-L/14 text encoder
// and the VAE decoder with post_quant_conv. The VAE encoder (34.2M) is left
// out: text-to-image never runs it, and weights upload on first use.
const (
	SD15UNetParams    = 859_520_964
	SD15TextParams    = 123_060_557
	SD15DecoderParams = 49_490_199
)

// Activation model, in f32 values (the Tensor contract keeps activations in
// f32), derived from the SD 1.5 graph:
//
//   - UNet, per latent pixel and per sample (the batch is doubled for
//     classifier-free guidance): 1620 values of skip connections held for the
//     up path (conv_in and two blocks of 320 at full size, 320 + 2x640 at 1/4,
//     640 + 2x1280 at 1/16, 3x1280 at 1/64) plus about 5760 live in a
//     full-size transformer block (residual, norm, q, k, v, attention output:
//     6x320; GEGLU projection 2560 and its 1280 output): 7380, rounded up to
//     unetValuesPerLatentPixel.
//   - VAE decoder, per output pixel and image: the last two up blocks run at
//     full size with 256 and 128 channels; at the peak a 256-channel input,
//     its group-norm output, a 256-channel conv output and a 128-channel
//     tensor are live: 896, rounded up to vaeValuesPerPixel.
//
// The UNet and the VAE never run at once, so the larger of the two counts.
// actSlack covers allocator rounding and fragmentation; overheadBytes covers
// the CUDA context, cuBLASLt and its workspace, and the kernels' images.
const (
	unetValuesPerLatentPixel = 8000
	vaeValuesPerPixel        = 1024
	actSlackNum, actSlackDen = 5, 4
	overheadBytes            = 768 << 20
)

// EstimateSD15 returns the device memory in bytes that a text-to-image run of
// SD 1.5 at width x height with batch images needs, with weights stored as
// dtype (F32, F16 or BF16): weights + max(UNet activations, VAE decode
// activations) * 5/4 + 768 MiB. For 512x512, batch 1, F16 that is about
// 3.9 GiB (2.06 GB of weights, a 1.07 GB VAE peak).
func EstimateSD15(width, height, batch int, dtype tensor.DType) uint64 {
	return Estimate(uint64(SD15UNetParams+SD15TextParams+SD15DecoderParams)*uint64(dtype.Size()), width, height, batch)
}

// Estimate is EstimateSD15 for a checkpoint whose UNet, text encoders and
// VAE decoder hold weightBytes as stored (ckpt.Info.InferenceBytes): the activation
// model of SD 1.5 serves every family as an upper bound (SD 2.x has the same
// widths; SDXL has no attention at its full-resolution level).
func Estimate(weightBytes uint64, width, height, batch int) uint64 {
	if width <= 0 || height <= 0 || batch <= 0 {
		return 0
	}
	weights := weightBytes
	latent := uint64(width/8) * uint64(height/8)
	unet := unetValuesPerLatentPixel * latent * 2 * uint64(batch) * 4
	vae := vaeValuesPerPixel * uint64(width) * uint64(height) * uint64(batch) * 4
	act := max(unet, vae) * actSlackNum / actSlackDen
	return weights + act + overheadBytes
}

// CheckFits returns nil when need bytes fit into gpu's free memory, and
// otherwise an error wrapping ErrInsufficientMemory that names the GPU and
// both sizes.
func CheckFits(gpu GPU, need uint64) error {
	if need <= gpu.FreeBytes {
		return nil
	}
	return fmt.Errorf("GPU %d (%s): the run needs %s of device memory but only %s of %s is free: %w",
		gpu.Index, gpu.Name, GiB(need), GiB(gpu.FreeBytes), GiB(gpu.TotalBytes), ErrInsufficientMemory)
}

// GiB formats a byte count as "4.1 GiB".
func GiB(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
