package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tinyedge/tinyedge/hub"
	"github.com/tinyedge/tinyedge/modules/filter"
	"github.com/tinyedge/tinyedge/modules/simtemp"
)

// builtin is a module compiled into the binary.
type builtin struct {
	// images are container images (without tag or digest) that this
	// module stands in for, so stock manifests run unchanged.
	images []string
	new    func() hub.Module
}

var builtins = map[string]builtin{
	"simtemp": {
		images: []string{"mcr.microsoft.com/azureiotedge-simulated-temperature-sensor"},
		new:    func() hub.Module { return simtemp.New(nil) },
	},
	"filter": {
		new: func() hub.Module { return filter.New(nil) },
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
	return "", fmt.Errorf(`unknown module type %q; want "builtin" (or "docker" with a stock image that has a built-in equivalent)`, typ)
}
