package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/tinyedge/tinyedge/hub"
)

// Settings say what program a module runs: a manifest's process module
// entry.
type Settings struct {
	// Path is the executable: an absolute path, or a bare name looked up
	// in tinyedge's PATH.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// WorkingDir is the directory the program starts in (absolute);
	// default: tinyedge's working directory.
	WorkingDir string
}

// Edge is the IoT Edge environment module processes get, so that
// ModuleClient.fromEnvironment() of the Azure IoT SDKs works unchanged.
type Edge struct {
	WorkloadURI     string // IOTEDGE_WORKLOADURI, e.g. unix:///var/lib/tinyedge/workload.sock
	IoTHubHostname  string // IOTEDGE_IOTHUBHOSTNAME
	GatewayHostname string // IOTEDGE_GATEWAYHOSTNAME: where modules connect
	APIVersion      string // IOTEDGE_APIVERSION; default DefaultAPIVersion
	// GenerationID returns the current generation id of a module's
	// identity, creating the identity when it has none; it is read at
	// every start, so a module restarted after a redeployment gets the
	// new one.
	GenerationID func(deviceID, moduleID string) (string, error)
}

// DefaultAPIVersion is the IOTEDGE_APIVERSION modules get by default.
const DefaultAPIVersion = "2018-06-28"

// Inherited are the variables of tinyedge's own environment that module
// processes get, as a container gets its image's: enough to find programs
// and format text. Everything else comes from the module's env in the
// manifest.
var Inherited = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR"}

// Options configure a Host.
type Options struct {
	// Edge, when set, gives every module process the IOTEDGE_*
	// variables.
	Edge *Edge
	// Grace is how long a process has between SIGTERM and SIGKILL when
	// it is stopped (default 5 s: the rest of the hub's 10 s stop timeout is
	// for SIGKILL).
	Grace time.Duration
	// LogLines is how many lines of output are kept per module (default
	// 1000).
	LogLines int
}

// Host runs the process modules of one tinyedge and keeps what the rest
// of tinyedge needs to know of them: which process belongs to which
// module (for the workload API) and their recent output (for `tinyedge
// logs`). It is safe for concurrent use.
type Host struct {
	opts Options

	mu   sync.Mutex
	pids map[int]string  // running module process → module name
	logs map[string]*Log // by module name, kept across restarts
}

// NewHost returns a Host; opts may be nil.
func NewHost(opts *Options) *Host {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	if o.LogLines <= 0 {
		o.LogLines = 1000
	}
	return &Host{opts: o, pids: map[int]string{}, logs: map[string]*Log{}}
}

// Module returns a hub.Module that runs the program s describes.
func (h *Host) Module(s Settings) hub.Module { return &module{host: h, s: s} }

// Log returns a module's output log, empty when the module has written
// nothing yet (it is the log the module's next line goes to).
func (h *Host) Log(module string) *Log {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.logs[module]
	if !ok {
		l = newLog(h.opts.LogLines)
		h.logs[module] = l
	}
	return l
}

// Retain forgets the output of modules not in modules (the ones a
// deployment dropped).
func (h *Host) Retain(modules []string) {
	keep := map[string]bool{}
	for _, m := range modules {
		keep[m] = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for m := range h.logs {
		if !keep[m] {
			delete(h.logs, m)
		}
	}
}

// PIDs returns the process id of each running module process, by module.
func (h *Host) PIDs() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.pids))
	for pid, m := range h.pids {
		out[m] = pid
	}
	return out
}

// Owner returns the module a process belongs to: the module whose
// process is pid, or an ancestor of pid, or leads pid's process group.
func (h *Host) Owner(pid int) (string, bool) {
	h.mu.Lock()
	pids := make(map[int]string, len(h.pids))
	for p, m := range h.pids {
		pids[p] = m
	}
	h.mu.Unlock()
	if len(pids) == 0 {
		return "", false
	}
	// The chain of parents is short; the bound only guards against a
	// /proc that changes under us into a loop.
	for range 64 {
		if m, ok := pids[pid]; ok {
			return m, true
		}
		st, err := readStat(pid)
		if err != nil {
			return "", false
		}
		// A descendant whose parent died was reparented, but stays in
		// the module's process group.
		if m, ok := pids[st.pgrp]; ok {
			return m, true
		}
		if st.ppid <= 1 {
			return "", false
		}
		pid = st.ppid
	}
	return "", false
}

func (h *Host) register(pid int, module string) {
	h.mu.Lock()
	h.pids[pid] = module
	h.mu.Unlock()
}

func (h *Host) unregister(pid int) {
	h.mu.Lock()
	delete(h.pids, pid)
	h.mu.Unlock()
}

// environ is a module process's environment: what it inherits, then the
// manifest's env, then the IOTEDGE_* variables, which the manifest cannot
// override.
func (h *Host) environ(c *hub.Client) ([]string, error) {
	env := map[string]string{}
	for _, k := range Inherited {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	if _, ok := env["PATH"]; !ok {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	for k, v := range c.Environ() {
		env[k] = v
	}
	if e := h.opts.Edge; e != nil {
		gen := ""
		if e.GenerationID != nil {
			var err error
			if gen, err = e.GenerationID(c.DeviceID(), c.ModuleID()); err != nil {
				return nil, fmt.Errorf("identity of module %s: %w", c.ModuleID(), err)
			}
		}
		api := e.APIVersion
		if api == "" {
			api = DefaultAPIVersion
		}
		env["IOTEDGE_WORKLOADURI"] = e.WorkloadURI
		env["IOTEDGE_DEVICEID"] = c.DeviceID()
		env["IOTEDGE_MODULEID"] = c.ModuleID()
		env["IOTEDGE_MODULEGENERATIONID"] = gen
		env["IOTEDGE_IOTHUBHOSTNAME"] = e.IoTHubHostname
		env["IOTEDGE_GATEWAYHOSTNAME"] = e.GatewayHostname
		env["IOTEDGE_AUTHSCHEME"] = "sasToken"
		env["IOTEDGE_APIVERSION"] = api
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// module is one process module of a deployment.
type module struct {
	host *Host
	s    Settings
}

// Run starts the program and waits for it. When ctx ends the program's
// process group gets SIGTERM, then SIGKILL after the grace period; when
// the program exits by itself, what it left running in its group is
// stopped the same way. Nothing of the group runs after Run returns
// (unless a process left the group with setsid). The error is the
// program's exit status.
func (m *module) Run(ctx context.Context, c *hub.Client) error {
	name := c.ModuleID()
	log := c.Logger()
	env, err := m.host.environ(c)
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start %s: %w", m.s.Path, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return fmt.Errorf("start %s: %w", m.s.Path, err)
	}
	cmd := exec.Command(m.s.Path, m.s.Args...)
	cmd.Dir = m.s.WorkingDir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = outW, errW
	// Its own process group, so stopping it reaches what it started;
	// and killed with tinyedge, should tinyedge die without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return fmt.Errorf("start %s: %w", m.s.Path, err)
	}
	pid := cmd.Process.Pid
	m.host.register(pid, name)
	defer m.host.unregister(pid)
	log.Info("process started", "pid", pid, "path", m.s.Path)

	out := m.host.Log(name)
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); capture(outR, "stdout", out, log) }()
	go func() { defer readers.Done(); capture(errR, "stderr", out, log) }()

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var waitErr error
	select {
	case waitErr = <-exited:
		// The program is gone; what it started may not be.
		if groupAlive(pid) {
			log.Info("process exited; stopping what it left running", "pid", pid)
			stopGroup(pid, nil, m.host.opts.Grace, log)
		}
	case <-ctx.Done():
		waitErr = stopGroup(pid, exited, m.host.opts.Grace, log)
	}
	// The pipes end when the last process holding them is gone; a
	// process that left the group could hold them open forever.
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(time.Second):
		log.Warn("a process outside the module's process group holds its output open; no longer reading it")
	}
	outR.Close()
	errR.Close()
	<-drained

	if ctx.Err() != nil {
		log.Info("process stopped", "pid", pid, "status", exitText(waitErr))
		return nil
	}
	if waitErr != nil {
		return fmt.Errorf("process %s (pid %d) %s", m.s.Path, pid, exitText(waitErr))
	}
	log.Info("process exited", "pid", pid, "status", "exit status 0")
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String()
	}
	return err.Error()
}

// stopGroup ends process group pgid: SIGTERM, then SIGKILL to whatever
// is left after grace. exited, when not nil, reports the group leader's
// exit, which stopGroup waits for and returns.
func stopGroup(pgid int, exited <-chan error, grace time.Duration, log *slog.Logger) error {
	var (
		waitErr    error
		leaderDone = exited == nil
	)
	gone := func() bool {
		if !leaderDone {
			select {
			case waitErr = <-exited:
				leaderDone = true
			default:
			}
		}
		return leaderDone && !groupAlive(pgid)
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	if pollUntil(gone, grace) {
		return waitErr
	}
	log.Warn("process group did not stop after SIGTERM; killing it", "pgid", pgid, "grace", grace)
	syscall.Kill(-pgid, syscall.SIGKILL)
	if !pollUntil(gone, 10*time.Second) {
		log.Error("process group survived SIGKILL", "pgid", pgid)
	}
	if !leaderDone {
		waitErr = <-exited
	}
	return waitErr
}

// pollUntil polls cond until it holds or d passes, and reports whether it
// held.
func pollUntil(cond func() bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
}
