module github.com/gosd/gosd

go 1.26

require github.com/NVIDIA/go-nvml v0.13.4-1

require gonum.org/v1/gonum v0.17.0 // indirect
