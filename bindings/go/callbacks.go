package parley

// #include "parley_go.h"
import "C"

import (
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// callback is the Go state behind one streaming callback: the function and
// the first panic it raised. Parley calls the trampolines of trampolines.c
// with the cgo.Handle of the state as user_data; a panic must not unwind
// through Parley's C frames, so it is recovered, the stream is stopped,
// and the Go call that started the stream panics again once Parley has
// returned.
type callback struct {
	text        func(piece string) bool
	translation func(text, hypothesis int, soFar string, final bool) bool
	token       func(prompt, sequence int, token int32) bool
	handle      cgo.Handle
	panicked    atomic.Bool
	panicValue  any
}

func newCallback(c *callback) *callback {
	c.handle = cgo.NewHandle(c)
	return c
}

func (c *callback) userData() unsafe.Pointer {
	return C.parley_go_handle_ptr(C.uintptr_t(c.handle))
}

// release deletes the handle; call it once Parley can no longer call back.
func (c *callback) release() {
	if c != nil && c.handle != 0 {
		c.handle.Delete()
		c.handle = 0
	}
}

// repanic raises the callback's panic again, on the caller's goroutine.
func (c *callback) repanic() {
	if c != nil && c.panicked.Load() {
		panic(c.panicValue)
	}
}

func (c *callback) run(f func() bool) (stop C.int32_t) {
	if c.panicked.Load() {
		return 1
	}
	defer func() {
		if v := recover(); v != nil {
			c.panicValue = v
			c.panicked.Store(true)
			stop = 1
		}
	}()
	if f() {
		return 0
	}
	return 1
}

//export parleyGoText
func parleyGoText(h C.uintptr_t, text *C.char, length C.size_t) C.int32_t {
	c := cgo.Handle(h).Value().(*callback)
	piece := C.GoStringN(text, C.int(length))
	return c.run(func() bool { return c.text(piece) })
}

//export parleyGoTranslationText
func parleyGoTranslationText(h C.uintptr_t, index, hypothesis C.size_t, text *C.char, length C.size_t, final C.int32_t) C.int32_t {
	c := cgo.Handle(h).Value().(*callback)
	soFar := C.GoStringN(text, C.int(length))
	return c.run(func() bool { return c.translation(int(index), int(hypothesis), soFar, final != 0) })
}

//export parleyGoToken
func parleyGoToken(h C.uintptr_t, batch, sequence C.size_t, token C.int32_t) C.int32_t {
	c := cgo.Handle(h).Value().(*callback)
	return c.run(func() bool { return c.token(int(batch), int(sequence), int32(token)) })
}
