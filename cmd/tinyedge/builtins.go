package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/hub/deploy"
	"github.com/tinyedge/tinyedge/modules/filter"
	"github.com/tinyedge/tinyedge/modules/gpio"
	"github.com/tinyedge/tinyedge/modules/ota"
	"github.com/tinyedge/tinyedge/modules/sensor"
	"github.com/tinyedge/tinyedge/modules/simtemp"
)

// runtimeEnv is what modules may need from the running binary.
type runtimeEnv struct {
	dataDir string
	restart func(reason string) // ends the run so an update boots
	local   *localServices      // identities, process modules, control socket; nil in tests without them
	// revalidate, when set, closes the local endpoint's connections whose
	// credentials a deployment revoked (edge.Endpoint.Revalidate).
	revalidate func() int
}

// builtin is a module compiled into the binary.
type builtin struct {
	// images are container images (without tag or digest) that this
	// module stands in for, so stock manifests run unchanged.
	images []string
	new    func(rt *runtimeEnv) hub.Module
	// checkEnv and checkDesired, when set, check a deployment entry's
	// settings for `tinyedge check`; each problem is a *hub.EnvError or
	// *hub.PropertyError (several may be joined with errors.Join).
	checkEnv     func(env map[string]string) error
	checkDesired func(desired map[string]any) error
	// hardware modules need the host's buses and pins (hw.Init).
	hardware bool
}

var builtins = map[string]builtin{
	"simtemp": {
		images:   []string{"mcr.microsoft.com/azureiotedge-simulated-temperature-sensor"},
		new:      func(*runtimeEnv) hub.Module { return simtemp.New(nil) },
		checkEnv: simtemp.CheckEnv,
	},
	"filter": {
		new: func(*runtimeEnv) hub.Module { return filter.New(nil) },
	},
	"sensor": {
		new:          func(*runtimeEnv) hub.Module { return sensor.New(nil) },
		checkEnv:     sensor.CheckEnv,
		checkDesired: sensor.CheckDesired,
		hardware:     true,
	},
	"ota": {
		new: func(rt *runtimeEnv) hub.Module {
			u := &deviceUpdater{}
			dir := os.TempDir()
			if rt != nil {
				u.dataDir, u.restart = rt.dataDir, rt.restart
				dir = filepath.Join(rt.dataDir, "downloads")
			}
			return ota.New(ota.Options{Updater: u, Dir: dir})
		},
	},
	"gpio": {
		new:          func(*runtimeEnv) hub.Module { return gpio.New(nil) },
		checkEnv:     gpio.CheckEnv,
		checkDesired: gpio.CheckDesired,
		hardware:     true,
	},
}

func builtinNames() string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, `"builtin:`+n+`"`)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// checkSettings runs a built-in module's own checks of its env and desired
// properties, with the JSON path of each problem; it is the CLI's
// deploy.SettingsChecker.
func checkSettings(mod deploy.Module, desired map[string]any) deploy.Problems {
	var probs deploy.Problems
	b := builtins[mod.Builtin]
	if b.checkEnv != nil {
		for _, err := range flatten(b.checkEnv(mod.Env)) {
			path := deploy.Member(mod.Path, "env")
			if ee, ok := errors.AsType[*hub.EnvError](err); ok {
				path = deploy.Member(deploy.Member(path, ee.Key), "value")
				err = ee.Err
			}
			probs = append(probs, deploy.Problem{Path: path, Msg: err.Error()})
		}
	}
	if b.checkDesired != nil {
		for _, err := range flatten(b.checkDesired(desired)) {
			path := mod.DesiredPath
			if pe, ok := errors.AsType[*hub.PropertyError](err); ok {
				path = deploy.Member(path, pe.Name)
				err = pe.Err
			}
			probs = append(probs, deploy.Problem{Path: path, Msg: err.Error()})
		}
	}
	return probs
}

// flatten lists the errors errors.Join put together.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// imageName strips the tag and digest from a container image reference:
// "mcr.microsoft.com/x:1.5" → "mcr.microsoft.com/x".
func imageName(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	slash := strings.LastIndexByte(image, '/')
	if i := strings.LastIndexByte(image, ':'); i > slash {
		image = image[:i]
	}
	return strings.ToLower(image)
}

// resolveModule maps a manifest module's type and image to a built-in
// module; it is the deploy.Resolver of the CLI.
func resolveModule(typ, image string) (string, error) {
	switch typ {
	case "builtin":
		name, ok := strings.CutPrefix(image, "builtin:")
		if !ok {
			return "", fmt.Errorf(`image %q of a builtin module must be "builtin:<name>"; built-in modules are %s`, image, builtinNames())
		}
		if _, ok := builtins[name]; !ok {
			return "", fmt.Errorf("no built-in module %q; built-in modules are %s", name, builtinNames())
		}
		return name, nil
	case "docker":
		want := imageName(image)
		for name, b := range builtins {
			for _, img := range b.images {
				if img == want {
					return name, nil
				}
			}
		}
		return "", fmt.Errorf(`image %q has no built-in equivalent and tinyedge runs no containers; use type "builtin" with one of %s`, image, builtinNames())
	}
	return "", fmt.Errorf(`unknown module type %q; want "builtin", "process" (a program to run), or "docker" with a stock image that has a built-in equivalent`, typ)
}
