package parley

// #include "parley_go.h"
import "C"

import (
	"context"
	"errors"
	"runtime"
	"sync"
)

// Request is a parley_request: a chat turn, generation or translation
// running on a Parley worker thread. Its methods may be called from any
// goroutine, except Close.
type Request struct {
	p    *C.parley_request
	keep any       // the model or session the request uses, kept reachable
	cb   *callback // its streaming callback, if any
}

func (m *cmem) submit(keep any, cb *callback, o *RequestOptions,
	submit func(*C.parley_request_options, **C.parley_request) C.parley_status) (*Request, error) {
	ro, err := m.request(o)
	if err != nil {
		return nil, err
	}
	var p *C.parley_request
	if err := call(func() C.parley_status { return submit(ro, &p) }); err != nil {
		return nil, err
	}
	r := &Request{p: p, keep: keep, cb: cb}
	if model, isModel := keep.(*Model); isModel {
		model.users.Add(1)
	}
	runtime.SetFinalizer(r, (*Request).Close)
	return r, nil
}

func (r *Request) handle() *C.parley_request {
	if r == nil {
		return nil
	}
	return r.p
}

// Wait blocks until the request is done. When ctx ends first the request is
// cancelled (parley_request_cancel) and Wait still waits for it to stop (at
// its next decoding step): its status is then ErrCancelled unless it
// finished first.
func (r *Request) Wait(ctx context.Context) error {
	p := r.handle()
	stop := make(chan struct{})
	var watcher sync.WaitGroup
	if done := ctx.Done(); done != nil && p != nil {
		watcher.Add(1)
		go func() {
			defer watcher.Done()
			select {
			case <-done:
				C.parley_request_cancel(p)
			case <-stop:
			}
		}()
	}
	err := call(func() C.parley_status { return C.parley_request_wait(p, -1) })
	close(stop)
	watcher.Wait() // no cancel may reach the request after Wait returns
	runtime.KeepAlive(r)
	return err
}

// Done reports whether the request is done (parley_request_poll).
func (r *Request) Done() (bool, error) {
	var done C.int32_t
	err := call(func() C.parley_status { return C.parley_request_poll(r.handle(), &done) })
	runtime.KeepAlive(r)
	return done != 0, err
}

// Cancel asks the request to stop (parley_request_cancel); harmless after the end.
func (r *Request) Cancel() error {
	err := call(func() C.parley_status { return C.parley_request_cancel(r.handle()) })
	runtime.KeepAlive(r)
	return err
}

// Err is the request's outcome: nil when it succeeded, its *Error when it
// failed, ErrBusy while it runs.
func (r *Request) Err() error {
	var st C.int32_t
	var msg *C.char
	if err := call(func() C.parley_status { return C.parley_request_status(r.handle(), &st, &msg) }); err != nil {
		return err
	}
	defer runtime.KeepAlive(r)
	if st == C.PARLEY_OK {
		return nil
	}
	if st == C.PARLEY_ERROR_BUSY {
		return &Error{Status: StatusBusy, Message: "the request is still running"}
	}
	return &Error{Status: Status(st), Message: C.GoString(msg)}
}

// TakeReply takes a finished chat turn's reply (parley_request_take_reply).
func (r *Request) TakeReply() (string, error) {
	var s *C.char
	err := call(func() C.parley_status { return C.parley_request_take_reply(r.handle(), &s) })
	runtime.KeepAlive(r)
	return takeString(s), err
}

// TakeGeneration takes a finished generation's result.
func (r *Request) TakeGeneration() (*GenerationResult, error) {
	var p *C.parley_generation_result
	err := call(func() C.parley_status { return C.parley_request_take_generation_result(r.handle(), &p) })
	runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	return newGenerationResult(p), nil
}

// TakeTranslation takes a finished translation's result.
func (r *Request) TakeTranslation() (*TranslationResult, error) {
	var p *C.parley_translation_result
	err := call(func() C.parley_status { return C.parley_request_take_translation_result(r.handle(), &p) })
	runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	return newTranslationResult(p), nil
}

// ReplyLogprobs are a finished chat turn's per-token log-probabilities
// (RequestOptions.ReturnLogprobs).
func (r *Request) ReplyLogprobs() ([]float32, error) {
	var lp *C.float
	var n C.size_t
	err := call(func() C.parley_status { return C.parley_request_reply_logprobs(r.handle(), &lp, &n) })
	defer runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	return floats(lp, n), nil
}

// JSON is the finished request as one document (parley_request_json,
// docs/results_json.md); flags: JSONNoTokens | JSONNoAttention.
func (r *Request) JSON(flags uint32) (string, error) {
	var s *C.char
	var n C.size_t
	err := call(func() C.parley_status { return C.parley_request_json(r.handle(), C.uint32_t(flags), &s, &n) })
	runtime.KeepAlive(r)
	return takeStringN(s, n), err
}

// Close frees the request and what was not taken from it; an unfinished
// request is cancelled and waited for first (parley_request_free).
// Closing twice is harmless; Close must not race with other calls on r.
func (r *Request) Close() error {
	if r != nil && r.p != nil {
		C.parley_request_free(r.p)
		r.p = nil
		r.cb.release()
		if model, isModel := r.keep.(*Model); isModel {
			model.users.Add(-1)
		}
		r.keep = nil
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

// ctxEnded is the error of a call whose context ended before it started.
func ctxEnded(ctx context.Context) error {
	cerr := ctx.Err()
	return &Error{Status: StatusCancelled, Message: "the context ended before the call: " + cerr.Error(), cause: cerr}
}

// ctxError adds the context's error to a request that ended cancelled
// while ctx had ended (so errors.Is(err, context.Canceled) holds). A
// request that finished before the cancel landed keeps its result.
func ctxError(ctx context.Context, err error) error {
	var e *Error
	if cerr := ctx.Err(); cerr != nil && errors.As(err, &e) && e.Status == StatusCancelled && e.cause == nil {
		return &Error{Status: StatusCancelled, Message: e.Message + " (" + cerr.Error() + ")", cause: cerr}
	}
	return err
}

// finish waits for an internal request, takes its result with take, frees
// it and raises its callback's panic, if any, again.
func (r *Request) finish(ctx context.Context, take func() error) error {
	err := r.Wait(ctx)
	if err == nil {
		err = take()
	}
	cb := r.cb
	r.cb = nil // released below, after the panic check
	r.Close()
	defer cb.release()
	cb.repanic()
	return ctxError(ctx, err)
}
