package unet_test

import (
	"testing"

	"github.com/gosd/gosd/sd/testmodel"
	"github.com/gosd/gosd/sd/unet"
)

// familyUNet loads the UNet of testmodel's random checkpoint described by o.
func familyUNet(t testing.TB, o testmodel.Options) *unet.UNet {
	t.Helper()
	src, err := testmodel.NewSource(o)
	if err != nil {
		t.Fatal(err)
	}
	u, err := unet.Load(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
