// Command tinyedge is the tinyedge IoT Edge runtime: one binary that runs
// the message hub and the built-in modules of a deployment manifest, checks
// manifests and tests routes.
//
// Usage:
//
//	tinyedge run [--manifest FILE] [--data-dir DIR] [--config FILE] [--upstream iothub|mqtt|console] [--log-format text|json]
//	tinyedge check --manifest FILE
//	tinyedge route test --route 'FROM … INTO …' --message FILE
//	tinyedge store stat|compact [--data-dir DIR]
//	tinyedge list|status [--data-dir DIR]
//	tinyedge logs MODULE [--follow] [--tail N] [--data-dir DIR]
//	tinyedge restart MODULE [--data-dir DIR]
//	tinyedge identities [--show-keys] [--data-dir DIR]
//	tinyedge identities rotate MODULE | --device ID [--data-dir DIR]
//	tinyedge bundle keygen|create|inspect …
//	tinyedge update apply|status|rollback …
//	tinyedge hubsim serve|identity|twin|method|monitor …
//	tinyedge init [COMMAND…]
//	tinyedge version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Set at build time with -ldflags -X (see the Makefile).
var (
	version = "dev"
	commit  = "unknown"
)

// exitError carries an exit status other than 1 out of a subcommand.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// errUsage marks errors that are the user's invocation; they exit 2.
var errUsage = errors.New("usage")

const usage = `tinyedge — an IoT Edge runtime in one binary

Usage:
  tinyedge run [--manifest FILE] [--data-dir DIR] [--config FILE] [--upstream iothub|mqtt|console] [--log-format text|json]
      Run the hub and the modules of a deployment manifest (the quickstart
      deployment when no manifest is given) until SIGINT or SIGTERM.
      SIGHUP re-reads the manifest and applies it without a restart.
  tinyedge check --manifest FILE
      Validate a deployment manifest: JSON, modules, settings and every
      route. Reports every problem with its JSON path.
  tinyedge route test (--route ROUTE... | --manifest FILE) --message FILE
      Show which sinks a message would reach and why. Exit status 0 when
      some route matches, 1 when none does, 2 on errors.
  tinyedge list [--json] [--data-dir DIR]
      Show the running tinyedge's modules: type, state, restarts, uptime.
  tinyedge logs MODULE [--follow] [--tail N] [--timestamps] [--data-dir DIR]
      Print a module's recent output: a process module's stdout and
      stderr, a built-in module's log lines; with --follow, keep printing
      new lines until interrupted.
  tinyedge restart MODULE [--data-dir DIR]
      Stop a module of the running tinyedge and start it again: a process
      module's program, a built-in module's goroutine. Its restart count
      starts again from 0, as after a deployment that changed it.
  tinyedge status [--data-dir DIR]
      Print the running tinyedge's status as JSON.
  tinyedge identities [--show-keys] [--data-dir DIR]
      List the module and leaf device identities tinyedge generated; with
      --show-keys, their keys and the leaf devices' connection strings.
  tinyedge identities rotate MODULE | --device ID [--data-dir DIR]
      Give a module (or a leaf device whose key tinyedge generated) a new
      key and generation id in the running tinyedge: a process module
      restarts with it, and connections made with the old key are closed.
  tinyedge store stat|compact [--data-dir DIR]
      With tinyedge stopped: show each queue's depth by priority, its
      oldest message and what was dropped; or compact the store file.
  tinyedge bundle keygen -o NAME
  tinyedge bundle create --key K --version V --binary FILE [--goarm N] -o F
  tinyedge bundle inspect F [--pub K.pub ...]
      Make signing keys, build a signed OTA bundle, show and verify one.
  tinyedge update apply FILE [--allow-downgrade] | status | rollback [--data-dir DIR]
      Install a signed bundle in the inactive slot, on trial (the keys it
      trusts are DIR/keys/*.pub); show the slots; go back to the previous
      version. The new version boots at the next start and confirms itself
      once healthy, or is rolled back.
  tinyedge hubsim serve|identity|twin|method|monitor …
      An IoT Hub emulator and its client (tinyedge hubsim help).
  tinyedge init [--data-label L] [COMMAND ARGS...]
      Be the gateway's PID 1, exec'd by the boot stage tinyedge-boot (or
      run by the kernel as /init; see build/image): the network, the
      clock and the service (run), kept going; a COMMAND runs once, then
      powers off. As /init it first mounts the system and the data
      partition and boots the OTA slot itself.
  tinyedge version
      Print version, commit, Go version and target.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, errRestartForUpdate) {
		restart()
	}
	os.Exit(exitCode(err, os.Stderr))
}

// restart starts tinyedge again from the installed binary, so the OTA
// start-up path chooses the version (the new one on trial, or the
// previous one after a rollback). A trial run under watch just exits
// with exitRestart: the installed binary watching it chooses again.
// Under systemd a plain exit would do as well; this works without it.
func restart() {
	installed := os.Getenv(installedEnv)
	if installed == "" || os.Getenv(trialEnv) == "1" {
		os.Exit(exitRestart)
	}
	err := syscall.Exec(installed, os.Args, os.Environ())
	fmt.Fprintln(os.Stderr, "tinyedge: restart:", err)
	os.Exit(exitRestart)
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "tinyedge:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "tinyedge:", err)
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

// run dispatches a subcommand. It is main without os.Exit, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	args = initArgs(args)
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "init":
		return cmdInit(ctx, args[1:], stderr)
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "route":
		if len(args) < 2 || args[1] != "test" {
			return fmt.Errorf("%w: want `tinyedge route test …`", errUsage)
		}
		return cmdRouteTest(args[2:], stdout, stderr)
	case "store":
		return cmdStore(args[1:], stdout, stderr)
	case "list":
		return cmdList(ctx, args[1:], stdout, stderr)
	case "logs":
		return cmdLogs(ctx, args[1:], stdout, stderr)
	case "restart":
		return cmdRestart(ctx, args[1:], stdout, stderr)
	case "status":
		return cmdStatus(ctx, args[1:], stdout, stderr)
	case "identities":
		return cmdIdentities(ctx, args[1:], stdout, stderr)
	case "bundle":
		return cmdBundle(args[1:], stdout, stderr)
	case "update":
		return cmdUpdate(ctx, args[1:], stdout, stderr)
	case "hubsim":
		return cmdHubsim(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		return cmdVersion(stdout)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}
