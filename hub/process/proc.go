package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// stat is what /proc/PID/stat tells of a process.
type stat struct {
	state byte // R, S, D, Z, …
	ppid  int
	pgrp  int
}

// readStat reads /proc/PID/stat.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	return parseStat(b)
}

// parseStat reads the fields after the command name, which is in
// parentheses and may itself hold spaces and parentheses: "pid (comm)
// state ppid pgrp …".
func parseStat(b []byte) (stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, errors.New("proc stat: no command name")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("proc stat: %d fields after the command name", len(f))
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	if err1 != nil || err2 != nil {
		return stat{}, fmt.Errorf("proc stat: ppid %q, pgrp %q", f[1], f[2])
	}
	return stat{state: f[0][0], ppid: ppid, pgrp: pgrp}, nil
}

// groupAlive reports whether process group pgid has a member that is not
// a zombie: a zombie has finished, and whether it is reaped depends on
// its parent (perhaps an init that never reaps).
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell; kill said someone is there
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgid {
			continue
		}
		if st.state != 'Z' && st.state != 'X' {
			return true
		}
	}
	return false
}
