// The bindings' conformance cases (issue 14) through the Go package, the
// same cases and models as tests/cpp/test_parley_hpp.cpp and
// bindings/rust/parley/tests/conformance.rs: translate with n-best and
// attention, chat with streaming, cancel from another goroutine and by a
// context, every error status, 1,000 create/free cycles; and the JSON
// documents against the getters. Run by the ctest go_binding (tests/go),
// which sets the environment below.
package parley

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func env(t *testing.T, name string) string {
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set (run through ctest go_binding)", name)
	}
	return v
}
func dataFile(t *testing.T, name string) string { return env(t, "PARLEY_TEST_DATA_DIR") + "/" + name }
func parity(t *testing.T, name string) string   { return env(t, "PARLEY_PARITY_MODELS") + "/" + name }
func demo(t *testing.T, name string) string     { return env(t, "PARLEY_DEMO_MODELS") + "/" + name }

func newRuntime(t *testing.T, threads int) *Runtime {
	rt, err := NewRuntime(&RuntimeOptions{
		NumThreads: threads, PluginDirs: []string{env(t, "PARLEY_PLUGIN_BUILD_DIR")}, OnlyPluginDirs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// must returns v, or stops the test at err: a panic that the test's
// deferred guard turns into t.Fatal (Go cannot pass a (T, error) pair and t
// to one function).
func must[T any](v T, err error) T {
	if err != nil {
		_, file, line, _ := runtime.Caller(1)
		panic(fatal{fmt.Sprintf("%s:%d: %v", filepath.Base(file), line, err)})
	}
	return v
}

type fatal struct{ msg string }

func guard(t *testing.T) {
	if v := recover(); v != nil {
		if f, isFatal := v.(fatal); isFatal {
			t.Fatal(f.msg)
		}
		panic(v)
	}
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The models every test shares, loaded once (as the C++ suite's fixture).
var shared struct {
	once            sync.Once
	rt              *Runtime
	deEn, llm, tiny *Model
	err             error
}

func models(t *testing.T) (deEn, llm, tiny *Model) {
	shared.once.Do(func() {
		shared.rt, shared.err = NewRuntime(&RuntimeOptions{
			PluginDirs: []string{os.Getenv("PARLEY_PLUGIN_BUILD_DIR")}, OnlyPluginDirs: true,
		})
		if shared.err != nil {
			return
		}
		for _, m := range []struct {
			dst  **Model
			path string
		}{
			{&shared.deEn, os.Getenv("PARLEY_DEMO_MODELS") + "/opus-mt-de-en.parley"},
			{&shared.llm, os.Getenv("PARLEY_DEMO_MODELS") + "/support-llama.parley"},
			{&shared.tiny, os.Getenv("PARLEY_PARITY_MODELS") + "/llama.parley"},
		} {
			if *m.dst, shared.err = LoadModel(shared.rt, m.path, nil); shared.err != nil {
				return
			}
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.deEn, shared.llm, shared.tiny
}

// Greedy chat options whose reply cannot end before `tokens` tokens.
func longReply(t *testing.T, llm *Model, tokens int) *ChatOptions {
	g := must(llm.GenerationOptions())
	g.DoSample = false
	g.MaxNewTokens = tokens
	g.MinNewTokens = tokens
	return &ChatOptions{Generation: g}
}

func statusOf(err error) Status {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	if err == nil {
		return StatusOK
	}
	return -1
}

// ---------------------------------------------------------------- translate

func TestTranslateNBestWithAttentionMatchesTransformers(t *testing.T) {
	defer guard(t)
	deEn, _, _ := models(t)
	ctx := context.Background()
	texts := goldenStrings(t, "DE_EN_TEXTS")
	nbest := goldenStrings(t, "DE_EN_NBEST2")
	scores := goldenFloats(t, "DE_EN_NBEST2_SCORES")
	best := goldenStrings(t, "DE_EN_BEST")
	g := must(deEn.GenerationOptions())
	g.NumBeams = 4
	g.NumReturnSequences = 2
	r := must(deEn.Translate(ctx, texts, &TranslationOptions{Generation: g, ReturnAttention: true}))
	defer r.Close()
	if r.Len() != len(texts) {
		t.Fatalf("%d texts, want %d", r.Len(), len(texts))
	}
	for i := range texts {
		if n := must(r.HypothesisCount(i)); n != 2 {
			t.Fatalf("text %d: %d hypotheses", i, n)
		}
		if e := must(r.TextError(i)); e != nil {
			t.Fatalf("text %d: %v", i, e)
		}
		src := must(r.SourceTokens(i))
		if want := must(deEn.Tokenize(texts[i])); !equal(src, want) {
			t.Errorf("text %d: source tokens %v, the tokenizer gives %v", i, src, want)
		}
		for h := 0; h < 2; h++ {
			if got := must(r.Text(i, h)); got != nbest[i*2+h] {
				t.Errorf("text %d hypothesis %d: %q, want %q", i, h, got, nbest[i*2+h])
			}
			if s := must(r.Score(i, h)); math.Abs(float64(s-scores[i*2+h])) > 1e-3 {
				t.Errorf("text %d hypothesis %d: score %v, want %v", i, h, s, scores[i*2+h])
			}
			tgt := must(r.TargetTokens(i, h))
			a := must(r.Attention(i, h))
			if a.Rows != len(tgt) || a.Cols != len(src) {
				t.Fatalf("attention %dx%d for %d target and %d source tokens", a.Rows, a.Cols, len(tgt), len(src))
			}
			for row := 0; row < a.Rows; row++ { // each row is a distribution over the source
				var sum float32
				for col := 0; col < a.Cols; col++ {
					if a.At(row, col) < 0 {
						t.Errorf("negative attention %v", a.At(row, col))
					}
					sum += a.At(row, col)
				}
				if math.Abs(float64(sum-1)) > 1e-4 {
					t.Errorf("text %d hypothesis %d: attention row %d sums to %v", i, h, row, sum)
				}
			}
		}
	}
	if _, err := r.Text(len(texts), 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("text past the end: %v", err)
	}
	if _, err := r.Text(0, 2); !errors.Is(err, ErrNotFound) {
		t.Errorf("hypothesis past the end: %v", err)
	}
	if _, err := r.Text(-1, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("negative index: %v", err)
	}
	// The JSON document carries the same texts.
	doc := must(r.JSON(JSONNoAttention))
	if !strings.HasPrefix(doc, `{"kind":"translation"`) {
		t.Errorf("JSON starts %q", doc[:40])
	}
	for _, want := range nbest {
		quoted, _ := json.Marshal(want)
		if !strings.Contains(doc, `"text":`+strings.ReplaceAll(string(quoted), `\u0026`, "&")) {
			t.Errorf("%q not in the JSON", want)
		}
	}
	// Without ReturnAttention there is none.
	plain := must(deEn.Translate(ctx, texts[:1], nil))
	defer plain.Close()
	if got := must(plain.Text(0, 0)); got != best[0] {
		t.Errorf("%q, want %q", got, best[0])
	}
	if _, err := plain.Attention(0, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("attention without ReturnAttention: %v", err)
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTranslateStreamsFinalTextsAndRepanics(t *testing.T) {
	defer guard(t)
	deEn, _, _ := models(t)
	all := goldenStrings(t, "DE_EN_TEXTS")
	texts := all[3:5]
	g := must(deEn.GenerationOptions())
	g.NumBeams = 1
	o := &TranslationOptions{Generation: g}
	finals := make([]string, len(texts))
	calls := 0
	r := must(deEn.TranslateStream(context.Background(), texts, o, func(text, h int, soFar string, final bool) bool {
		if h != 0 {
			t.Errorf("hypothesis %d of greedy decoding", h)
		}
		calls++
		if final {
			finals[text] = soFar
		}
		return true
	}))
	defer r.Close()
	for i := range texts {
		if want := must(r.Text(i, 0)); finals[i] != want {
			t.Errorf("text %d: final %q, result %q", i, finals[i], want)
		}
	}
	if calls <= len(texts) {
		t.Errorf("%d calls: greedy decoding streams before the final texts", calls)
	}
	type stop struct{}
	func() {
		defer func() {
			if v := recover(); v != (stop{}) {
				t.Errorf("recovered %v, want the callback's panic", v)
			}
		}()
		_, _ = deEn.TranslateStream(context.Background(), texts, o, func(int, int, string, bool) bool { panic(stop{}) })
		t.Error("no panic")
	}()
}

// ---------------------------------------------------------------- chat

func TestChatStreamsTheReplyTransformersGives(t *testing.T) {
	defer guard(t)
	_, llm, _ := models(t)
	ctx := context.Background()
	system := goldenStrings(t, "CHAT_SYSTEM")[0]
	turns := goldenStrings(t, "CHAT_TURNS")
	replies := goldenStrings(t, "CHAT_REPLIES")
	g := must(llm.GenerationOptions())
	g.MaxNewTokens = goldenDefine(t, "CHAT_MAX_NEW_TOKENS")
	g.DoSample = false
	o := &ChatOptions{Generation: g}
	s := must(NewChatSession(llm, system))
	defer s.Close()
	ok(t, s.Append(RoleUser, turns[0]))
	var streamed strings.Builder
	pieces := 0
	reply := must(s.GenerateStream(ctx, o, func(piece string) bool {
		streamed.WriteString(piece)
		pieces++
		return true
	}))
	if reply != replies[0] {
		t.Errorf("reply %q, want %q", reply, replies[0])
	}
	if streamed.String() != reply || pieces < 2 {
		t.Errorf("%d pieces streamed %q", pieces, streamed.String())
	}
	if n := must(s.MessageCount()); n != 3 { // system, user, assistant
		t.Fatalf("%d messages", n)
	}
	if role, content, err := s.Message(2); err != nil || role != RoleAssistant || content != reply {
		t.Errorf("message 2: %v %q %v", role, content, err)
	}
	if st := must(s.Stats()); st.GeneratedTokens == 0 {
		t.Error("no generated tokens counted")
	}

	// Returning false ends the reply there (not an error).
	ok(t, s.RemoveLast())
	first := ""
	cut := must(s.GenerateStream(ctx, o, func(piece string) bool {
		first = piece
		return false
	}))
	if cut != first || !strings.HasPrefix(replies[0], cut) {
		t.Errorf("cut reply %q after the first piece %q", cut, first)
	}

	// The channel form gives the same reply.
	ok(t, s.RemoveLast())
	stream := s.Stream(ctx, o)
	var got []string
	for p := range stream.Pieces {
		got = append(got, p)
	}
	whole, err := stream.Wait()
	if err != nil || whole != replies[0] || strings.Join(got, "") != replies[0] || len(got) < 2 {
		t.Errorf("stream: %d pieces %q, reply %q, %v", len(got), strings.Join(got, ""), whole, err)
	}

	// Two streams at once, read one after the other: the first one's pieces
	// wait in its queue, not on the engine thread both turns need (a Stream
	// that waited for its reader there held the second turn for ever).
	ok(t, s.RemoveLast())
	other := must(NewChatSession(llm, system))
	defer other.Close()
	ok(t, other.Append(RoleUser, turns[0]))
	tctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	streamA, streamB := s.Stream(tctx, longReply(t, llm, 24)), other.Stream(tctx, longReply(t, llm, 24))
	var read [2]int
	for i, st := range []*ReplyStream{streamB, streamA} {
		for range st.Pieces {
			read[i]++
		}
		if _, err := st.Wait(); err != nil || read[i] < 2 {
			t.Errorf("stream %d read after the other: %d pieces, %v", i, read[i], err)
		}
	}

	// A panic in the callback comes back out, and the conversation is unchanged.
	ok(t, s.RemoveLast())
	func() {
		defer func() {
			if v := recover(); v != "stop here" {
				t.Errorf("recovered %v", v)
			}
		}()
		_, _ = s.GenerateStream(ctx, o, func(string) bool { panic("stop here") })
		t.Error("no panic")
	}()
	if n := must(s.MessageCount()); n != 2 {
		t.Errorf("%d messages after the panic, want 2", n)
	}

	// A text with a NUL inside is refused, not cut.
	if err := s.Append(RoleUser, "a\x00b"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NUL inside a message: %v", err)
	}
}

func TestChatCancelFromAnotherGoroutine(t *testing.T) {
	defer guard(t)
	_, llm, _ := models(t)
	s := must(NewChatSession(llm, goldenStrings(t, "CHAT_SYSTEM")[0]))
	defer s.Close()
	ok(t, s.Append(RoleUser, goldenStrings(t, "CHAT_TURNS")[0]))
	var streaming, cancelled atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !streaming.Load() {
			time.Sleep(time.Millisecond)
		}
		if err := s.Cancel(); err != nil {
			t.Error(err)
		}
		cancelled.Store(true)
	}()
	pieces := 0
	_, err := s.GenerateStream(context.Background(), longReply(t, llm, 48), func(string) bool {
		pieces++
		streaming.Store(true)
		// Hold the turn until the other goroutine's cancel has landed: the
		// reply cannot finish first (MinNewTokens).
		for !cancelled.Load() {
			time.Sleep(time.Millisecond)
		}
		return true
	})
	wg.Wait()
	if !errors.Is(err, ErrCancelled) || pieces < 1 {
		t.Fatalf("%v after %d pieces, want ErrCancelled", err, pieces)
	}
	if n := must(s.MessageCount()); n != 2 { // the conversation is unchanged
		t.Errorf("%d messages", n)
	}
	// And the session still works.
	o := longReply(t, llm, 0)
	o.Generation.MaxNewTokens = 4
	if reply := must(s.Generate(context.Background(), o)); reply == "" {
		t.Error("empty reply after the cancel")
	}
}

func TestContextCancelMapsToParleyCancel(t *testing.T) {
	defer guard(t)
	deEn, llm, _ := models(t)
	s := must(NewChatSession(llm, ""))
	defer s.Close()
	ok(t, s.Append(RoleUser, "Hi"))

	// Cancelled while streaming: the request stops at its next step.
	ctx, cancel := context.WithCancel(context.Background())
	pieces := 0
	_, err := s.GenerateStream(ctx, longReply(t, llm, 200), func(string) bool {
		if pieces++; pieces == 2 {
			cancel()
		}
		return true
	})
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want ErrCancelled wrapping context.Canceled", err)
	}
	if pieces >= 200 {
		t.Errorf("%d pieces: the cancel did not stop the turn", pieces)
	}
	if n := must(s.MessageCount()); n != 1 {
		t.Errorf("%d messages after the cancelled turn, want 1", n)
	}

	// A deadline.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Generate(ctx, longReply(t, llm, 200))
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want ErrCancelled wrapping context.DeadlineExceeded", err)
	}
	t.Logf("200-token turn with a 20 ms context deadline ended after %v", time.Since(start))

	// A context that ended before the call: nothing runs.
	done, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if _, err := deEn.Translate(done, []string{"Hallo!"}, nil); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrCancelled) {
		t.Errorf("translate with an ended context: %v", err)
	}
	if _, err := s.Generate(done, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("chat with an ended context: %v", err)
	}

	// A translation cancelled while it runs (between decoding steps).
	ctx, cancel = context.WithCancel(context.Background())
	g := must(deEn.GenerationOptions())
	g.NumBeams = 1
	g.MinNewTokens = 200
	g.MaxNewTokens = 200
	_, err = deEn.TranslateStream(ctx, []string{"Hallo!"}, &TranslationOptions{Generation: g},
		func(int, int, string, bool) bool { cancel(); return true })
	if !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Errorf("translation: %v", err)
	}
}

func TestRequestCancelFromAnotherGoroutine(t *testing.T) {
	defer guard(t)
	_, llm, _ := models(t)
	s := must(NewChatSession(llm, goldenStrings(t, "CHAT_SYSTEM")[0]))
	defer s.Close()
	ok(t, s.Append(RoleUser, goldenStrings(t, "CHAT_TURNS")[0]))
	r := must(s.Submit(longReply(t, llm, 200), nil))
	defer r.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.Cancel(); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	ok(t, r.Wait(context.Background()))
	if err := r.Err(); !errors.Is(err, ErrCancelled) {
		t.Errorf("status %v", err)
	}
	if _, err := r.TakeReply(); !errors.Is(err, ErrCancelled) {
		t.Errorf("take: %v", err)
	}
	var doc struct {
		Request string          `json:"request"`
		Status  string          `json:"status"`
		Result  json.RawMessage `json:"result"`
	}
	ok(t, json.Unmarshal([]byte(must(r.JSON(0))), &doc))
	if doc.Request != "chat" || doc.Status != "PARLEY_ERROR_CANCELLED" || string(doc.Result) != "null" {
		t.Errorf("request JSON %+v", doc)
	}
	if n := must(s.MessageCount()); n != 2 {
		t.Errorf("%d messages", n)
	}
}

// ---------------------------------------------------------- every error status

func TestEveryErrorStatusIsAnErrorWithItsMessage(t *testing.T) {
	defer guard(t)
	deEn, llm, tiny := models(t)
	ctx := context.Background()
	bytes, err := os.ReadFile(dataFile(t, "tiny_decoder.parley"))
	ok(t, err)
	if len(bytes) <= 4096 {
		t.Fatal("tiny_decoder.parley is too small")
	}
	sentinels := map[Status]error{
		StatusInvalidArgument: ErrInvalidArgument, StatusOutOfMemory: ErrOutOfMemory, StatusIO: ErrIO,
		StatusInvalidModel: ErrInvalidModel, StatusUnsupportedVersion: ErrUnsupportedVersion,
		StatusChecksum: ErrChecksum, StatusNotFound: ErrNotFound, StatusPlugin: ErrPlugin,
		StatusDevice: ErrDevice, StatusUnsupported: ErrUnsupported, StatusInternal: ErrInternal,
		StatusCancelled: ErrCancelled, StatusBusy: ErrBusy, StatusTimeout: ErrTimeout,
	}
	cases := map[Status]func() error{
		StatusInvalidArgument: func() error {
			_, err := deEn.Translate(ctx, []string{"a\x00b"}, nil)
			return err
		},
		StatusOutOfMemory: func() error { // a KV cache that can never fit, refused before allocating
			g := must(tiny.GenerationOptions())
			g.MaxNewTokens = 8
			g.NumBeams = 1 << 29
			_, err := tiny.Generate(ctx, [][]int32{{1, 5, 9}}, g)
			return err
		},
		StatusIO: func() error {
			_, err := LoadModel(shared.rt, dataFile(t, "no_such_model.parley"), nil)
			return err
		},
		StatusInvalidModel: func() error {
			_, err := LoadModelMemory(shared.rt, make([]byte, 4096), nil)
			return err
		},
		StatusUnsupportedVersion: func() error {
			// Format major 2 (bytes 8-9, little-endian): the loader checks the
			// version before the preamble's checksum.
			b := append([]byte(nil), bytes...)
			b[8], b[9] = 2, 0
			_, err := LoadModelMemory(shared.rt, b, nil)
			return err
		},
		StatusChecksum: func() error {
			b := append([]byte(nil), bytes...)
			b[40] ^= 0x10 // inside the checksummed preamble
			_, err := LoadModelMemory(shared.rt, b, nil)
			return err
		},
		StatusNotFound: func() error { return tiny.VerifyTensor("no.such.tensor") },
		StatusPlugin: func() error {
			return shared.rt.LoadPlugin(env(t, "PARLEY_PLUGIN_BUILD_DIR") + "/libparley_cpu.so")
		},
		StatusDevice: func() error { // a device whose driver is missing (tests/runtime/bad_plugin.c, kind 8)
			rt := newRuntime(t, 0)
			defer rt.Close()
			ok(t, rt.LoadPlugin(env(t, "PARLEY_FAKEGPU_PLUGIN")))
			_, err := LoadModel(rt, dataFile(t, "tiny_decoder.parley"), &ModelOptions{Device: "fakegpu"})
			return err
		},
		StatusUnsupported: func() error {
			_, err := llm.Translate(ctx, []string{"Hallo!"}, nil)
			return err
		},
		StatusCancelled: func() error {
			s := must(NewChatSession(llm, ""))
			defer s.Close()
			ok(t, s.Append(RoleUser, "Hi"))
			r := must(s.Submit(longReply(t, llm, 200), nil))
			defer r.Close()
			ok(t, r.Cancel())
			ok(t, r.Wait(ctx))
			_, err := r.TakeReply()
			return err
		},
		StatusBusy: func() error { // the session called from its own streaming callback
			s := must(NewChatSession(llm, ""))
			defer s.Close()
			ok(t, s.Append(RoleUser, "Hi"))
			var busy error
			_, err := s.GenerateStream(ctx, longReply(t, llm, 2), func(string) bool {
				_, busy = s.MessageCount()
				return false
			})
			ok(t, err)
			return busy
		},
		StatusTimeout: func() error { // a deadline far shorter than 200 tokens take
			s := must(NewChatSession(llm, ""))
			defer s.Close()
			ok(t, s.Append(RoleUser, "Hi"))
			r := must(s.Submit(longReply(t, llm, 200), &RequestOptions{Deadline: time.Millisecond}))
			defer r.Close()
			ok(t, r.Wait(ctx))
			_, err := r.TakeReply()
			return err
		},
	}
	for want, run := range cases {
		err := run()
		var e *Error
		if !errors.As(err, &e) || e.Status != want {
			t.Errorf("%v: got %v", want, err)
			continue
		}
		if e.Message == "" {
			t.Errorf("%v: no message", want)
		}
		for st, sentinel := range sentinels {
			if errors.Is(err, sentinel) != (st == want) {
				t.Errorf("%v: errors.Is(err, sentinel of %v) = %v", want, st, st != want)
			}
		}
		if !strings.HasPrefix(err.Error(), want.String()+": ") {
			t.Errorf("%v: the error text %q does not name its status", want, err.Error())
		}
	}
	// Every code but INTERNAL (a bug in Parley; no input reaches it) is covered.
	for code := Status(1); code <= StatusTimeout; code++ {
		if _, covered := cases[code]; !covered && code != StatusInternal {
			t.Errorf("%v not produced", code)
		}
	}
	if Status(99).String() != "PARLEY_ERROR_UNKNOWN" {
		t.Errorf("unknown status named %q", Status(99).String())
	}

	// The message names what was wrong.
	if err := tiny.VerifyTensor("no.such.tensor"); !strings.Contains(err.Error(), "no.such.tensor") {
		t.Errorf("%v does not name the tensor", err)
	}
	// A closed handle is NULL to the C API, whose check answers; Close twice is harmless.
	m := must(LoadModel(shared.rt, parity(t, "llama.parley"), nil))
	if arch := must(m.Architecture()); arch != "LlamaForCausalLM" {
		t.Errorf("architecture %q", arch)
	}
	// A model with an open session (or request) is not freed under it.
	held := must(NewChatSession(llm, ""))
	if err := llm.Close(); !errors.Is(err, ErrBusy) {
		t.Errorf("closing a model with an open session: %v", err)
	}
	ok(t, held.Close())
	ok(t, m.Close())
	ok(t, m.Close())
	if _, err := m.Architecture(); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("closed model: %v", err)
	}
	var nilModel *Model
	if _, err := nilModel.Tokenize("x"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("nil model: %v", err)
	}
	// Strings that C reads up to a NUL are refused with a NUL inside, not cut.
	if _, err := LoadModel(shared.rt, parity(t, "llama.parley")+"\x00.txt", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("path with a NUL: %v", err)
	}
	// A negative size is refused, not wrapped around.
	g := must(tiny.GenerationOptions())
	g.MaxNewTokens = -1
	if _, err := tiny.Generate(ctx, [][]int32{{1, 2}}, g); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("negative MaxNewTokens: %v", err)
	}
	// A session busy with a turn refuses Close.
	s := must(NewChatSession(llm, ""))
	ok(t, s.Append(RoleUser, "Hi"))
	_, err = s.GenerateStream(ctx, longReply(t, llm, 2), func(string) bool {
		if err := s.Close(); !errors.Is(err, ErrBusy) {
			t.Errorf("Close during the turn: %v", err)
		}
		return true
	})
	ok(t, err)
	ok(t, s.Close())
}

// ---------------------------------------------------------- create/free cycles

func countEntries(dir string) int {
	entries, _ := os.ReadDir(dir)
	return len(entries)
}

// Mappings of `path` in this process (a model loaded from a file maps it).
func mappingsOf(path string) int {
	maps, _ := os.ReadFile("/proc/self/maps")
	n := 0
	for _, line := range strings.Split(string(maps), "\n") {
		if strings.HasSuffix(line, path) {
			n++
		}
	}
	return n
}

func rssBytes(t *testing.T) int64 {
	status, err := os.ReadFile("/proc/self/status")
	ok(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			for _, f := range strings.Fields(line)[1:2] {
				for _, c := range f {
					kb = kb*10 + int64(c-'0')
				}
			}
			return kb * 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func TestThousandCreateFreeCyclesLeaveNothingBehind(t *testing.T) {
	defer guard(t)
	deEn, llm, _ := models(t)
	ctx := context.Background()
	decoder := parity(t, "llama_bias.parley") // not llama.parley: the shared models keep that one mapped
	tg := must(deEn.GenerationOptions())
	tg.NumBeams = 1
	tg.MaxNewTokens = 8
	to := &TranslationOptions{Generation: tg}
	co := longReply(t, llm, 4)
	cycle := func(i int) (tokens []int32, reply, doc string) {
		rt := newRuntime(t, 1)
		defer rt.Close()
		m := must(LoadModel(rt, decoder, nil))
		defer m.Close()
		g := must(m.GenerationOptions())
		g.MaxNewTokens = 4
		g.DoSample = false
		gr := must(m.Generate(ctx, [][]int32{{1, 7, 9}}, g))
		defer gr.Close()
		tokens = must(gr.Tokens(0, 0))
		// Sessions of the shared chat model (the tiny Llama has no tokenizer).
		chat := must(NewChatSession(llm, "sys"))
		defer chat.Close()
		ok(t, chat.Append(RoleUser, "hello"))
		if n := must(chat.MessageCount()); n != 2 {
			t.Fatalf("%d messages", n)
		}
		if i%10 == 0 {
			reply = must(chat.GenerateStream(ctx, co, func(string) bool { return true }))
			tr := must(deEn.Translate(ctx, []string{"Hallo!"}, to))
			defer tr.Close()
			doc = must(tr.JSON(0))
		}
		return
	}
	// Warm up: the shared models' serving engine, and the threads the Go
	// runtime starts for goroutines blocked in cgo calls (it keeps them).
	firstTokens, firstReply, firstDoc := cycle(0)
	if firstReply == "" || mappingsOf(decoder) != 0 {
		t.Fatalf("warm-up: reply %q, %d mappings", firstReply, mappingsOf(decoder))
	}
	for i := 1; i < 20; i++ {
		cycle(i)
	}
	threadsBefore, fdsBefore, rssBefore := countEntries("/proc/self/task"), countEntries("/proc/self/fd"), rssBytes(t)
	// Every cycle creates and frees a runtime, a model, a generation
	// result, a chat session and the requests under the calls; every 10th
	// also runs a chat turn and a translation on the shared demo models.
	for i := 0; i < 1000; i++ {
		tokens, reply, doc := cycle(i)
		if !equal(tokens, firstTokens) || (i%10 == 0 && (reply != firstReply || doc != firstDoc)) {
			t.Fatalf("cycle %d differs from the first", i)
		}
		if i == 0 {
			// The model file is unmapped at Close (the check below can see one left mapped).
			if mappingsOf(decoder) != 0 {
				t.Fatal("the model stays mapped after Close")
			}
		}
	}
	threadsAfter, fdsAfter, rssAfter := countEntries("/proc/self/task"), countEntries("/proc/self/fd"), rssBytes(t)
	t.Logf("threads %d -> %d, fds %d -> %d, RSS %.1f -> %.1f MiB", threadsBefore, threadsAfter,
		fdsBefore, fdsAfter, float64(rssBefore)/(1<<20), float64(rssAfter)/(1<<20))
	// Files and mappings are exact. Threads: every runtime's kernel threads
	// and every request's worker are joined; the Go runtime may still start
	// an OS thread for a goroutine blocked in a cgo call and keeps it, so a
	// few more are allowed (a leak of one per cycle would be ~1000).
	if fdsAfter != fdsBefore {
		t.Errorf("file descriptors %d -> %d", fdsBefore, fdsAfter)
	}
	if threadsAfter > threadsBefore+4 {
		t.Errorf("threads %d -> %d", threadsBefore, threadsAfter)
	}
	if mappingsOf(decoder) != 0 {
		t.Error("a model stays mapped")
	}
	// RSS: a leaked model copy, KV cache or result per cycle would add
	// megabytes per cycle; 32 MiB over 1,000 cycles is allocator noise
	// (small C leaks are LeakSanitizer's job in the C++ suite).
	if rssAfter-rssBefore > 32<<20 {
		t.Errorf("RSS grew by %.1f MiB over 1,000 cycles", float64(rssAfter-rssBefore)/(1<<20))
	}
}

func TestFinalizersFreeForgottenHandles(t *testing.T) {
	defer guard(t)
	models(t)
	decoder := parity(t, "llama_bias.parley")
	func() {
		rt := newRuntime(t, 1)
		m := must(LoadModel(rt, decoder, nil))
		g := must(m.GenerationOptions())
		g.MaxNewTokens = 2
		_ = must(m.Generate(context.Background(), [][]int32{{1, 7}}, g))
		if mappingsOf(decoder) != 1 {
			t.Fatal("the model is not mapped")
		}
	}() // nothing closed
	deadline := time.Now().Add(10 * time.Second)
	for mappingsOf(decoder) != 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if mappingsOf(decoder) != 0 {
		t.Error("the finalizers did not free the forgotten model")
	}
}

func TestGenerateStreamsTheResultTokens(t *testing.T) {
	defer guard(t)
	_, _, tiny := models(t)
	g := must(tiny.GenerationOptions())
	g.MaxNewTokens = 6
	g.MinNewTokens = 6
	g.DoSample = false
	streamed := make([][]int32, 2)
	r := must(tiny.GenerateStream(context.Background(), [][]int32{{1, 7, 9}, {1, 30}}, g,
		func(prompt, sequence int, token int32) bool {
			if sequence != 0 {
				t.Errorf("sequence %d of greedy decoding", sequence)
			}
			streamed[prompt] = append(streamed[prompt], token)
			return true
		}))
	defer r.Close()
	for b := range streamed {
		if want := must(r.Tokens(b, 0)); len(want) != 6 || !equal(streamed[b], want) {
			t.Errorf("prompt %d: streamed %v, result %v", b, streamed[b], want)
		}
	}
	// Returning false finishes the sequence after that token.
	short := must(tiny.GenerateStream(context.Background(), [][]int32{{1, 7, 9}}, g,
		func(_, _ int, _ int32) bool { return false }))
	defer short.Close()
	if got := must(short.Tokens(0, 0)); len(got) != 1 || got[0] != streamed[0][0] {
		t.Errorf("stopped after the first token: %v", got)
	}
}

// ---------------------------------------------------------- results as JSON

type translationDoc struct {
	Kind  string `json:"kind"`
	Texts []struct {
		Status       string  `json:"status"`
		StatusCode   int32   `json:"status_code"`
		Message      string  `json:"message"`
		Segments     *int    `json:"segments"`
		SourceTokens []int32 `json:"source_tokens"`
		Hypotheses   []struct {
			Text           string            `json:"text"`
			Score          float32           `json:"score"`
			CutByLength    *bool             `json:"cut_by_length"`
			Tokens         []int32           `json:"tokens"`
			Attention      [][]float32       `json:"attention"`
			ProtectedSpans []json.RawMessage `json:"protected_spans"`
		} `json:"hypotheses"`
	} `json:"texts"`
}

func TestTranslationJSONHoldsWhatTheGettersReturn(t *testing.T) {
	defer guard(t)
	deEn, _, _ := models(t)
	all := goldenStrings(t, "DE_EN_TEXTS")
	texts := []string{all[0], "", all[2]}
	g := must(deEn.GenerationOptions())
	g.NumBeams = 4
	g.NumReturnSequences = 2
	r := must(deEn.Translate(context.Background(), texts,
		&TranslationOptions{Generation: g, ReturnAttention: true, PerTextErrors: true}))
	defer r.Close()
	var doc translationDoc
	ok(t, json.Unmarshal([]byte(must(r.JSON(0))), &doc))
	if doc.Kind != "translation" || len(doc.Texts) != len(texts) {
		t.Fatalf("kind %q, %d texts", doc.Kind, len(doc.Texts))
	}
	for i, d := range doc.Texts {
		e := must(r.TextError(i))
		var st Status
		msg := ""
		if e != nil {
			st, msg = e.Status, e.Message
		}
		if d.StatusCode != int32(st) || d.Status != st.String() || d.Message != msg {
			t.Errorf("text %d: %s %d %q, getters %v %q", i, d.Status, d.StatusCode, d.Message, st, msg)
		}
		if n := must(r.HypothesisCount(i)); len(d.Hypotheses) != n {
			t.Errorf("text %d: %d hypotheses, getters %d", i, len(d.Hypotheses), n)
		}
		if st != StatusOK {
			continue
		}
		if !equal(d.SourceTokens, must(r.SourceTokens(i))) || d.Segments == nil || *d.Segments != 1 {
			t.Errorf("text %d: source tokens or segments", i)
		}
		for h, j := range d.Hypotheses {
			a := must(r.Attention(i, h))
			if j.Text != must(r.Text(i, h)) || j.Score != must(r.Score(i, h)) || // exact: 9 digits round-trip a float
				j.CutByLength == nil || *j.CutByLength != must(r.CutByLength(i, h)) ||
				!equal(j.Tokens, must(r.TargetTokens(i, h))) || len(j.Attention) != a.Rows ||
				j.ProtectedSpans == nil || len(j.ProtectedSpans) != 0 {
				t.Errorf("text %d hypothesis %d differs from the getters", i, h)
				continue
			}
			for row := range j.Attention {
				for col, w := range j.Attention[row] {
					if len(j.Attention[row]) != a.Cols || w != a.At(row, col) {
						t.Fatalf("text %d hypothesis %d: attention [%d][%d]", i, h, row, col)
					}
				}
			}
		}
	}
	if doc.Texts[1].Status != "PARLEY_ERROR_INVALID_ARGUMENT" {
		t.Errorf("empty text: %s", doc.Texts[1].Status)
	}
	// Flags leave out the bulk.
	lean := must(r.JSON(JSONNoTokens | JSONNoAttention))
	if strings.Contains(lean, `"source_tokens"`) || strings.Contains(lean, `"tokens"`) || strings.Contains(lean, `"attention"`) {
		t.Error("the flags did not leave out tokens and attention")
	}
	if _, err := r.JSON(4); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown flag: %v", err)
	}
}

func TestGenerationAndRequestJSONHoldWhatTheGettersReturn(t *testing.T) {
	defer guard(t)
	deEn, llm, tiny := models(t)
	ctx := context.Background()
	g := must(tiny.GenerationOptions())
	g.MaxNewTokens = 6
	g.DoSample = false
	req := must(tiny.GenerateSubmit([][]int32{{1, 7, 9}, {1, 30}}, g, &RequestOptions{ReturnLogprobs: true}))
	defer req.Close()
	ok(t, req.Wait(ctx))
	var rdoc struct {
		Request string          `json:"request"`
		Status  string          `json:"status"`
		Result  json.RawMessage `json:"result"`
	}
	ok(t, json.Unmarshal([]byte(must(req.JSON(0))), &rdoc))
	if rdoc.Request != "generation" || rdoc.Status != "PARLEY_OK" {
		t.Errorf("request %q status %q", rdoc.Request, rdoc.Status)
	}
	r := must(req.TakeGeneration())
	defer r.Close()
	if _, err := req.JSON(0); !errors.Is(err, ErrNotFound) { // taken
		t.Errorf("JSON after the take: %v", err)
	}
	text := must(r.JSON(0))
	if strings.TrimSpace(string(rdoc.Result)) != text {
		t.Error("the request's document does not hold the result's")
	}
	var doc struct {
		Batch []struct {
			Hypotheses []struct {
				Tokens     []int32   `json:"tokens"`
				Score      float32   `json:"score"`
				Logprobs   []float32 `json:"logprobs"`
				Constraint string    `json:"constraint"`
			} `json:"hypotheses"`
		} `json:"batch"`
	}
	ok(t, json.Unmarshal([]byte(text), &doc))
	if len(doc.Batch) != 2 || r.Len() != 2 {
		t.Fatalf("%d prompts in the JSON, %d in the result", len(doc.Batch), r.Len())
	}
	for b := range doc.Batch {
		j := doc.Batch[b].Hypotheses[0]
		if !equal(j.Tokens, must(r.Tokens(b, 0))) || j.Score != must(r.Score(b, 0)) ||
			!equal(j.Logprobs, must(r.Logprobs(b, 0))) || j.Constraint != "none" {
			t.Errorf("prompt %d differs from the getters", b)
		}
	}

	// A chat request: the reply and its log-probabilities, without taking it.
	s := must(NewChatSession(llm, ""))
	defer s.Close()
	ok(t, s.Append(RoleUser, "Hi"))
	chat := must(s.Submit(longReply(t, llm, 5), &RequestOptions{ReturnLogprobs: true}))
	defer chat.Close()
	ok(t, chat.Wait(ctx))
	var cdoc struct {
		Request string `json:"request"`
		Result  struct {
			Reply    string    `json:"reply"`
			Logprobs []float32 `json:"logprobs"`
		} `json:"result"`
	}
	ok(t, json.Unmarshal([]byte(must(chat.JSON(0))), &cdoc))
	if cdoc.Request != "chat" || !equal(cdoc.Result.Logprobs, must(chat.ReplyLogprobs())) ||
		cdoc.Result.Reply != must(chat.TakeReply()) {
		t.Errorf("chat request JSON %+v", cdoc)
	}

	// A translation request: its document holds the translation document.
	best := goldenStrings(t, "DE_EN_BEST")
	tr := must(deEn.TranslateSubmit([]string{goldenStrings(t, "DE_EN_TEXTS")[3]}, nil, nil))
	defer tr.Close()
	ok(t, tr.Wait(ctx))
	var tdoc struct {
		Request string         `json:"request"`
		Result  translationDoc `json:"result"`
	}
	ok(t, json.Unmarshal([]byte(must(tr.JSON(JSONNoTokens))), &tdoc))
	if tdoc.Request != "translation" || tdoc.Result.Texts[0].Hypotheses[0].Text != best[3] {
		t.Errorf("translation request JSON %+v", tdoc)
	}
	res := must(tr.TakeTranslation())
	defer res.Close()
	if got := must(res.Text(0, 0)); got != best[3] {
		t.Errorf("%q, want %q", got, best[3])
	}
}
