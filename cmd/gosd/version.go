package main

import (
	"runtime"
	"runtime/debug"

	"github.com/gosd/gosd/sd"
)

// versionString is the release plus the VCS revision the binary was built from.
func versionString() string {
	s := sd.Version + " " + runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" && len(kv.Value) >= 12 {
				s += " " + kv.Value[:12]
			}
		}
	}
	return s
}
