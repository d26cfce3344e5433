package muster

import (
	"errors"
	"fmt"
)

var (
	// ErrUnauthorized: the daemon refused the heartbeat token (or its
	// absence). Run returns an error matching it and does not retry.
	ErrUnauthorized = errors.New("muster: the daemon refused the heartbeat token")
	// ErrSuperseded: another connection said hello for this worker id;
	// the newer one wins, so Run returns an error matching it.
	ErrSuperseded = errors.New("muster: another connection took this worker id over")
	// ErrWorkerMismatch: the daemon requires client certificates and
	// the one presented names another worker (its subject's CN is the
	// worker's identity; hello named another id). Run returns an error
	// matching it and does not retry.
	ErrWorkerMismatch = errors.New("muster: the client certificate names another worker")
	// ErrClosed: the worker was closed.
	ErrClosed = errors.New("muster: worker closed")
)

// DaemonError is an error line from the daemon: its code (too_large,
// unauthorized, task_not_held, shutting_down, ...) and message.
type DaemonError struct {
	Code    string
	Message string
}

func (e *DaemonError) Error() string {
	return fmt.Sprintf("muster: daemon: %s: %s", e.Code, e.Message)
}

// Is matches ErrUnauthorized, ErrSuperseded and ErrWorkerMismatch by
// code.
func (e *DaemonError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Code == "unauthorized"
	case ErrSuperseded:
		return e.Code == "superseded"
	case ErrWorkerMismatch:
		return e.Code == "worker_mismatch"
	}
	return false
}

// fatalCode says whether an error line ends the worker wherever it
// comes: the token refused, the id taken over, or a client certificate
// naming another worker (another address would say the same).
func fatalCode(code string) bool {
	switch code {
	case "unauthorized", "superseded", "worker_mismatch":
		return true
	}
	return false
}

// fatalHello says whether a refused hello would be refused again,
// whatever the address: a wrong token, or a hello the daemon cannot read.
func fatalHello(code string) bool {
	switch code {
	case "unauthorized", "worker_mismatch", "bad_worker_id", "reserved_id", "bad_field", "too_large",
		"not_json", "not_object", "missing_type", "unknown_type", "invalid_utf8":
		return true
	}
	return false
}

type nonRetryable struct{ err error }

func (e nonRetryable) Error() string { return e.err.Error() }
func (e nonRetryable) Unwrap() error { return e.err }

// NonRetryable marks a handler's error as one another attempt would
// meet too: the task ends failed (retryable false) instead of being
// tried again. NonRetryable(nil) is nil.
func NonRetryable(err error) error {
	if err == nil {
		return nil
	}
	return nonRetryable{err}
}

// IsNonRetryable says whether err, or an error it wraps, was marked
// with NonRetryable.
func IsNonRetryable(err error) bool {
	var n nonRetryable
	return errors.As(err, &n)
}
