// Package process runs module programs as child processes: a manifest
// module of type "process" is any executable (a Node.js module written
// with the Azure IoT SDK, a Python script, a Go binary) that tinyedge
// starts, watches and stops as edgeAgent would its container.
//
// Each program runs in its own process group with the IOTEDGE_*
// environment of IoT Edge (see Edge), so ModuleClient.fromEnvironment()
// finds the workload API and its identity. Its stdout and stderr are read
// line by line into tinyedge's log, tagged with the module's name and the
// stream, and the last lines are kept in memory for `tinyedge logs`.
// When the module is stopped its group gets SIGTERM, then SIGKILL after
// a grace period; when the program exits by itself, what it left running
// in its group is stopped too. Run returns the exit status as an error,
// so the hub's supervisor applies the module's restartPolicy with
// backoff, as for any hub.Module.
//
// # Caveats
//
//   - A process that leaves the module's process group (setsid, a
//     daemonizing fork) escapes the stop, and is no longer taken for the
//     module by Owner unless it is a descendant of the module's process.
//     There are no cgroups here.
//   - The program runs as tinyedge's user with tinyedge's privileges;
//     only the variables in Inherited come from tinyedge's environment.
//   - If tinyedge itself is killed (kill -9, a crash), the kernel kills
//     each module program (Pdeathsig), but not what the program started:
//     those processes are left running. The kernel ties that signal to
//     the thread that started the program, so code in tinyedge must not
//     end a locked OS thread (runtime.LockOSThread without unlocking)
//     while modules run.
//   - Output lines are cut at MaxLineBytes; the ring keeps LogLines lines
//     per module in memory, from tinyedge's start only.
package process
