package parley

// #include "parley_go.h"
import "C"

import (
	"context"
	"runtime"
	"sync"
)

// Role is a chat message's role (parley_chat_role).
type Role int32

// The roles of parley_chat_role.
const (
	RoleSystem    Role = C.PARLEY_ROLE_SYSTEM
	RoleUser      Role = C.PARLEY_ROLE_USER
	RoleAssistant Role = C.PARLEY_ROLE_ASSISTANT
	RoleTool      Role = C.PARLEY_ROLE_TOOL
)

// ChatSession is a parley_chat_session: a conversation with a decoder-only
// model that keeps its KV cache between turns. One goroutine uses a session
// at a time; Cancel may be called from any goroutine. A call made while a
// turn runs (from its streaming callback, or another goroutine) fails with
// ErrBusy and changes nothing.
type ChatSession struct {
	p     *C.parley_chat_session
	model *Model // keeps the model reachable while the session lives

	mu          sync.Mutex
	running     *C.parley_request // the turn GenerateStream runs, for Cancel
	starting    bool              // GenerateStream is submitting its turn
	cancelEarly bool              // Cancel came while it was
}

// NewChatSession starts a conversation (parley_chat_session_create_n);
// systemPrompt "" means no system message (the model's template may add
// its default one).
func NewChatSession(model *Model, systemPrompt string) (*ChatSession, error) {
	var m cmem
	defer m.free()
	var sys *C.char
	if systemPrompt != "" {
		sys = m.bytes(systemPrompt)
	}
	var p *C.parley_chat_session
	err := call(func() C.parley_status {
		return C.parley_chat_session_create_n(model.handle(), sys, C.size_t(len(systemPrompt)), &p)
	})
	runtime.KeepAlive(model)
	if err != nil {
		return nil, err
	}
	s := &ChatSession{p: p, model: model}
	model.users.Add(1)
	runtime.SetFinalizer(s, (*ChatSession).Close)
	return s, nil
}

func (s *ChatSession) handle() *C.parley_chat_session {
	if s == nil {
		return nil
	}
	return s.p
}

// Close frees the session. While a turn runs it frees nothing and returns
// ErrBusy. Closing twice is harmless.
func (s *ChatSession) Close() error {
	if s == nil || s.p == nil {
		return nil
	}
	// parley_chat_session_free reports a refusal only through
	// parley_last_error; ask first with a call that answers BUSY the same way.
	var n C.size_t
	if err := call(func() C.parley_status { return C.parley_chat_message_count(s.p, &n) }); err != nil {
		return err
	}
	C.parley_chat_session_free(s.p)
	s.p = nil
	s.model.users.Add(-1)
	runtime.SetFinalizer(s, nil)
	return nil
}

// Append adds a message (parley_chat_append_n); a NUL byte inside content
// is refused, never cut.
func (s *ChatSession) Append(role Role, content string) error {
	var m cmem
	defer m.free()
	c := m.bytes(content)
	err := call(func() C.parley_status {
		return C.parley_chat_append_n(s.handle(), C.int32_t(role), c, C.size_t(len(content)))
	})
	runtime.KeepAlive(s)
	return err
}

// Generate runs the assistant's turn and appends the reply to the
// conversation. o may be nil. When ctx ends first (or Cancel is called) the
// turn stops with ErrCancelled and the conversation is unchanged.
func (s *ChatSession) Generate(ctx context.Context, o *ChatOptions) (string, error) {
	return s.GenerateStream(ctx, o, nil)
}

// GenerateStream is Generate with fn called with each new piece of the
// reply (UTF-8, never a split code point). Returning false ends the reply
// there (not an error: the reply so far is appended). fn runs on the
// model's serving engine thread (a Parley thread; without an engine, the
// request's worker) while the session is busy: calls on the session from fn
// fail with ErrBusy. Keep fn short and never block in it: while it runs, no
// request of the model takes a step (Stream queues its pieces for that). A panic in fn ends the turn, leaves the conversation
// unchanged and is raised again by GenerateStream.
func (s *ChatSession) GenerateStream(ctx context.Context, o *ChatOptions, fn func(piece string) bool) (string, error) {
	if ctx.Err() != nil {
		return "", ctxEnded(ctx)
	}
	var m cmem
	defer m.free()
	co, err := m.chat(s.model.handle(), o)
	if err != nil {
		return "", err
	}
	var cb *callback
	if fn != nil {
		cb = newCallback(&callback{text: fn})
		co.on_text = C.parley_text_fn(C.parley_go_text_fn)
		co.user_data = cb.userData()
	}
	p := s.handle()
	s.mu.Lock()
	s.starting, s.cancelEarly = true, false
	s.mu.Unlock()
	req, err := m.submit(s, cb, nil, func(ro *C.parley_request_options, out **C.parley_request) C.parley_status {
		return C.parley_chat_submit(p, co, ro, out)
	})
	s.mu.Lock()
	s.starting = false
	if err == nil {
		s.running = req.p
		if s.cancelEarly { // a Cancel during the submission applies to this turn
			C.parley_request_cancel(req.p)
		}
	}
	s.mu.Unlock()
	if err != nil {
		cb.release()
		return "", err
	}
	err = req.Wait(ctx)
	s.mu.Lock()
	s.running = nil
	s.mu.Unlock()
	var reply string
	if err == nil {
		reply, err = req.TakeReply()
	}
	req.cb = nil
	req.Close()
	defer cb.release()
	if cb != nil && cb.panicked.Load() {
		if err == nil { // fn stopped the reply, which was appended: take it back
			_ = call(func() C.parley_status { return C.parley_chat_remove_last(p) })
		}
		cb.repanic()
	}
	runtime.KeepAlive(s)
	return reply, ctxError(ctx, err)
}

// ReplyStream is a reply arriving on a channel (ChatSession.Stream).
type ReplyStream struct {
	// Pieces delivers the reply's pieces and is closed when the turn ends.
	Pieces <-chan string
	done   chan struct{}
	reply  string
	err    error
}

// Wait blocks until the turn has ended and gives the whole reply.
func (r *ReplyStream) Wait() (string, error) {
	<-r.done
	return r.reply, r.err
}

// Stream runs the turn in the background and delivers its pieces on a
// channel, in order. The turn does not wait for its reader: Parley produces
// the pieces on the model's serving engine thread, which must not block
// (every request of the model would wait), so they queue here until read.
// Read Pieces to the end, or cancel ctx: then the pieces not yet read are
// dropped and Pieces is closed.
func (s *ChatSession) Stream(ctx context.Context, o *ChatOptions) *ReplyStream {
	ch := make(chan string)
	r := &ReplyStream{Pieces: ch, done: make(chan struct{})}
	var (
		mu     sync.Mutex
		queue  []string
		ended  bool
		wakeup = make(chan struct{}, 1)
	)
	wake := func() {
		select {
		case wakeup <- struct{}{}:
		default: // a wake-up is pending already
		}
	}
	go func() {
		reply, err := s.GenerateStream(ctx, o, func(piece string) bool {
			mu.Lock()
			queue = append(queue, piece)
			mu.Unlock()
			wake()
			return true
		})
		mu.Lock()
		r.reply, r.err, ended = reply, err, true
		mu.Unlock()
		wake()
	}()
	go func() { // the reader's side: queued pieces onto the channel
		defer close(r.done)
		defer close(ch)
		for {
			mu.Lock()
			pieces, last := queue, ended
			queue = nil
			mu.Unlock()
			for _, p := range pieces {
				select {
				case ch <- p:
				case <-ctx.Done(): // nobody reads any more: wait for the turn's end, drop the rest
					for {
						mu.Lock()
						last = ended
						queue = nil
						mu.Unlock()
						if last {
							return
						}
						<-wakeup
					}
				}
			}
			if last {
				return
			}
			<-wakeup
		}
	}()
	return r
}

// Cancel stops the running turn soon (from any goroutine): it ends with
// ErrCancelled and the conversation is unchanged (parley_chat_cancel).
func (s *ChatSession) Cancel() error {
	s.mu.Lock()
	if s.running != nil {
		// Also before the worker has started the turn, which
		// parley_chat_cancel alone would miss.
		C.parley_request_cancel(s.running)
	} else if s.starting {
		s.cancelEarly = true
	}
	s.mu.Unlock()
	err := call(func() C.parley_status { return C.parley_chat_cancel(s.handle()) })
	runtime.KeepAlive(s)
	return err
}

// Submit starts the turn on a worker thread and returns at once
// (parley_chat_submit); take the reply with Request.TakeReply. The session
// is busy until the turn ends. o and ro may be nil.
func (s *ChatSession) Submit(o *ChatOptions, ro *RequestOptions) (*Request, error) {
	var m cmem
	defer m.free()
	co, err := m.chat(s.model.handle(), o)
	if err != nil {
		return nil, err
	}
	p := s.handle()
	return m.submit(s, nil, ro, func(cro *C.parley_request_options, out **C.parley_request) C.parley_status {
		return C.parley_chat_submit(p, co, cro, out)
	})
}

// Reset drops every message after the system prompt.
func (s *ChatSession) Reset() error {
	err := call(func() C.parley_status { return C.parley_chat_reset(s.handle()) })
	runtime.KeepAlive(s)
	return err
}

// RemoveLast drops the last message.
func (s *ChatSession) RemoveLast() error {
	err := call(func() C.parley_status { return C.parley_chat_remove_last(s.handle()) })
	runtime.KeepAlive(s)
	return err
}

// MessageCount is the number of messages, the system prompt included.
func (s *ChatSession) MessageCount() (int, error) {
	var n C.size_t
	err := call(func() C.parley_status { return C.parley_chat_message_count(s.handle(), &n) })
	runtime.KeepAlive(s)
	return int(n), err
}

// Message is message i's role and content.
func (s *ChatSession) Message(i int) (Role, string, error) {
	var role C.int32_t
	var content *C.char
	var text string
	err := call(func() C.parley_status {
		st := C.parley_chat_message(s.handle(), index(i), &role, &content)
		if st == C.PARLEY_OK {
			text = C.GoString(content) // before anything can change the session
		}
		return st
	})
	runtime.KeepAlive(s)
	return Role(role), text, err
}

// ChatStats are the counters of the last turn (parley_chat_stats).
type ChatStats struct {
	PromptTokens, ReusedTokens, ProcessedTokens, GeneratedTokens uint64
	TotalProcessedTokens, CachedTokens                           uint64
}

// Stats gives the counters of the last turn.
func (s *ChatSession) Stats() (ChatStats, error) {
	var st C.parley_chat_stats
	st.struct_size = C.sizeof_parley_chat_stats
	err := call(func() C.parley_status { return C.parley_chat_stats_get(s.handle(), &st) })
	runtime.KeepAlive(s)
	return ChatStats{
		PromptTokens: uint64(st.prompt_tokens), ReusedTokens: uint64(st.reused_tokens),
		ProcessedTokens: uint64(st.processed_tokens), GeneratedTokens: uint64(st.generated_tokens),
		TotalProcessedTokens: uint64(st.total_processed_tokens), CachedTokens: uint64(st.cached_tokens),
	}, err
}
