// Package parley is the Go binding of Parley's C ABI
// (include/parley/parley.h): handles with Close (and a finalizer as a
// safety net), errors carrying the status and parley_last_error()'s
// message, context.Context mapped to Parley's request cancellation, and
// streaming through callbacks or a channel.
//
// Building needs the header and the library: CGO_CFLAGS=-I<include> and
// CGO_LDFLAGS=-L<libdir> when they are not where the compiler looks.
package parley

// #cgo LDFLAGS: -lparley
// #include "parley_go.h"
import "C"

import (
	"fmt"
	"runtime"
)

// Status is a parley_status: StatusOK or one of the error codes of parley.h.
type Status int32

// The codes of parley_status_code (include/parley/parley.h).
const (
	StatusOK                 Status = C.PARLEY_OK
	StatusInvalidArgument    Status = C.PARLEY_ERROR_INVALID_ARGUMENT
	StatusOutOfMemory        Status = C.PARLEY_ERROR_OUT_OF_MEMORY
	StatusIO                 Status = C.PARLEY_ERROR_IO
	StatusInvalidModel       Status = C.PARLEY_ERROR_INVALID_MODEL
	StatusUnsupportedVersion Status = C.PARLEY_ERROR_UNSUPPORTED_VERSION
	StatusChecksum           Status = C.PARLEY_ERROR_CHECKSUM
	StatusNotFound           Status = C.PARLEY_ERROR_NOT_FOUND
	StatusPlugin             Status = C.PARLEY_ERROR_PLUGIN
	StatusDevice             Status = C.PARLEY_ERROR_DEVICE
	StatusUnsupported        Status = C.PARLEY_ERROR_UNSUPPORTED
	StatusInternal           Status = C.PARLEY_ERROR_INTERNAL
	StatusCancelled          Status = C.PARLEY_ERROR_CANCELLED
	StatusBusy               Status = C.PARLEY_ERROR_BUSY
	StatusTimeout            Status = C.PARLEY_ERROR_TIMEOUT
)

// String is the status' name, e.g. "PARLEY_ERROR_NOT_FOUND" (parley_status_name).
func (s Status) String() string {
	return C.GoString(C.parley_status_name(C.int32_t(s)))
}

// Error is a failed Parley call: its status and the message
// parley_last_error() gave for it (or the request's message).
//
// errors.Is(err, parley.ErrNotFound) tests the status; an error caused by a
// cancelled or expired context.Context also unwraps to ctx.Err(), so
// errors.Is(err, context.Canceled) holds as well.
type Error struct {
	Status  Status
	Message string
	cause   error // the context's error when a context ended the call
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Status.String()
	}
	return e.Status.String() + ": " + e.Message
}

// Is reports whether target is the sentinel of e's status (ErrNotFound, ...).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.cause == nil && t.Status == e.Status
}

// Unwrap gives the context's error when a context ended the call, else nil.
func (e *Error) Unwrap() error { return e.cause }

// Sentinels for errors.Is, one per status.
var (
	ErrInvalidArgument    error = &Error{Status: StatusInvalidArgument}
	ErrOutOfMemory        error = &Error{Status: StatusOutOfMemory}
	ErrIO                 error = &Error{Status: StatusIO}
	ErrInvalidModel       error = &Error{Status: StatusInvalidModel}
	ErrUnsupportedVersion error = &Error{Status: StatusUnsupportedVersion}
	ErrChecksum           error = &Error{Status: StatusChecksum}
	ErrNotFound           error = &Error{Status: StatusNotFound}
	ErrPlugin             error = &Error{Status: StatusPlugin}
	ErrDevice             error = &Error{Status: StatusDevice}
	ErrUnsupported        error = &Error{Status: StatusUnsupported}
	ErrInternal           error = &Error{Status: StatusInternal}
	ErrCancelled          error = &Error{Status: StatusCancelled}
	ErrBusy               error = &Error{Status: StatusBusy}
	ErrTimeout            error = &Error{Status: StatusTimeout}
)

// call runs one fallible C call and turns its status into an error with
// parley_last_error()'s message. parley_last_error is per OS thread and a
// goroutine may move to another thread between two cgo calls, so the
// goroutine stays on its thread from the call to the read of the message.
func call(f func() C.parley_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if st := f(); st != C.PARLEY_OK {
		return &Error{Status: Status(st), Message: C.GoString(C.parley_last_error())}
	}
	return nil
}

// errorf is an error found on the Go side before calling Parley (a closed
// handle, a NUL byte in a NUL-terminated string), worded like Parley's.
func errorf(st Status, format string, args ...any) error {
	return &Error{Status: st, Message: fmt.Sprintf(format, args...)}
}

// Version is the loaded library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.parley_version_string()) }
