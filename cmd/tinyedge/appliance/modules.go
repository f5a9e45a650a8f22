package appliance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Where the image keeps its kernel modules: ModulesList names them, one
// per line in load order (dependencies first, as the image build resolved
// them), and each is ModulesDir/<name>.ko, uncompressed.
const (
	ModulesList = "/etc/tinyedge/modules"
	ModulesDir  = "/lib/modules"
)

// ModuleResult says what LoadModules did.
type ModuleResult struct {
	Loaded, Already []string // module names
	Failed          []error
}

// LoadModules loads the modules ModulesList names. A module already loaded
// (or built in) is no error; a module that fails is reported and the rest
// are still loaded, since a driver for absent hardware must not keep the
// gateway from booting. An image without a list loads nothing.
func (m *Machine) LoadModules() (ModuleResult, error) {
	var r ModuleResult
	f, err := os.Open(m.path(ModulesList))
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("modules: %w", err)
	}
	defer f.Close()
	names, err := parseModuleList(f)
	if err != nil {
		return r, fmt.Errorf("modules: %s: %w", ModulesList, err)
	}
	for _, name := range names {
		p := m.path(path.Join(ModulesDir, name+".ko"))
		switch err := m.Sys.LoadModule(p); {
		case err == nil:
			r.Loaded = append(r.Loaded, name)
		case errors.Is(err, unix.EEXIST):
			r.Already = append(r.Already, name)
		default:
			r.Failed = append(r.Failed, fmt.Errorf("module %s: %w", name, err))
		}
	}
	return r, nil
}

// parseModuleList reads a module list: one module name per line; blank
// lines and lines starting with # are skipped. A name is a file name
// without .ko: no slashes, no spaces.
func parseModuleList(r io.Reader) ([]string, error) {
	var names []string
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		name := strings.TrimSuffix(s, ".ko")
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/ \t") {
			return nil, fmt.Errorf("line %d: %q is not a module name (want a name such as virtio_blk)", line, s)
		}
		names = append(names, name)
	}
	return names, sc.Err()
}
