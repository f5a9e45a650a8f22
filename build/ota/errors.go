package ota

import (
	"errors"
	"fmt"
)

// Errors returned by this package. Each is wrapped with what was wrong and
// what would fix it; test for them with errors.Is. Bundle refusals wrap
// the errors of package bundle (bundle.ErrBadSignature, bundle.ErrDowngrade
// and so on) instead.
var (
	// ErrTrialInProgress means Apply was called while an update is on
	// trial: its slot is running or about to run, and the other slot is the
	// rollback target, so neither may be written. Confirm or Rollback first.
	ErrTrialInProgress = errors.New("ota: an update is on trial")
	// ErrNoTrial means Confirm was called with no update on trial.
	ErrNoTrial = errors.New("ota: no update on trial")
	// ErrNoRollbackTarget means Rollback found no slot holding a version
	// to go back to.
	ErrNoRollbackTarget = errors.New("ota: no previous version to roll back to")
	// ErrNoBinary means a verified bundle does not carry exactly one
	// payload, named "tinyedge".
	ErrNoBinary = errors.New("ota: bundle does not carry the tinyedge binary")
	// ErrUnhealthy means WaitHealthy's window passed without a successful
	// check; it is matched by *UnhealthyError.
	ErrUnhealthy = errors.New("ota: not healthy within the window")
	// ErrInvalid means an argument or option cannot be honoured.
	ErrInvalid = errors.New("ota: invalid argument")
)

// crashError is what an operation returns when the test failpoint stops
// it. The operation returns at once and cleans nothing up, as a power cut
// would leave it.
type crashError struct {
	step string
	err  error
}

func (e *crashError) Error() string { return "ota: stopped at " + e.step + ": " + e.err.Error() }
func (e *crashError) Unwrap() error { return e.err }

func isCrash(err error) bool {
	var c *crashError
	return errors.As(err, &c)
}

// failpoint, when set (only by tests), is called at every step between two
// durable effects (write, fsync, rename, state update) of Apply, Confirm,
// Rollback and Boot on the data directory dataDir. A non-nil return stops
// the operation there as a crash would: the operation returns a
// *crashError and undoes nothing.
var failpoint func(dataDir, step string) error

// hit calls the failpoint for step.
func hit(dataDir, step string) error {
	if failpoint == nil {
		return nil
	}
	if err := failpoint(dataDir, step); err != nil {
		return &crashError{step: step, err: err}
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
