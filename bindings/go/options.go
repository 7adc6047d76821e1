package parley

// #include "parley_go.h"
import "C"

import (
	"time"
	"unsafe"
)

// GenerationOptions are parley_generation_options (decoding as Hugging Face
// transformers' generate()). Start from Model.GenerationOptions, which holds
// the model's generation defaults, and change what you need; a nil
// *GenerationOptions means those defaults.
type GenerationOptions struct {
	MaxNewTokens       int
	MinNewTokens       int
	NumBeams           int
	NumReturnSequences int
	LengthPenalty      float32
	EarlyStopping      int32 // 0 false, 1 true, 2 "never"
	NoRepeatNgramSize  int
	RepetitionPenalty  float32
	DoSample           bool
	Temperature        float32
	TopK               int
	TopP               float32
	MinP               float32
	Seed               uint64
	EOSTokenIDs        []int32 // empty: the model's
	Grammar            string  // GBNF (docs/constrained_output.md); "" for none
	JSONSchema         string  // "" for none
	ReturnLogprobs     bool
	NumAlternatives    int
}

func generationFromC(g *C.parley_generation_options) *GenerationOptions {
	o := &GenerationOptions{
		MaxNewTokens:       int(g.max_new_tokens),
		MinNewTokens:       int(g.min_new_tokens),
		NumBeams:           int(g.num_beams),
		NumReturnSequences: int(g.num_return_sequences),
		LengthPenalty:      float32(g.length_penalty),
		EarlyStopping:      int32(g.early_stopping),
		NoRepeatNgramSize:  int(g.no_repeat_ngram_size),
		RepetitionPenalty:  float32(g.repetition_penalty),
		DoSample:           g.do_sample != 0,
		Temperature:        float32(g.temperature),
		TopK:               int(g.top_k),
		TopP:               float32(g.top_p),
		MinP:               float32(g.min_p),
		Seed:               uint64(g.seed),
		ReturnLogprobs:     g.return_logprobs != 0,
		NumAlternatives:    int(g.num_alternatives),
	}
	if g.num_eos_token_ids > 0 && g.eos_token_ids != nil {
		ids := unsafe.Slice((*int32)(unsafe.Pointer(g.eos_token_ids)), int(g.num_eos_token_ids))
		o.EOSTokenIDs = append([]int32(nil), ids...)
	}
	return o
}

// size refuses a negative count (it would wrap around as a size_t).
func size(what string, v int) (C.size_t, error) {
	if v < 0 {
		return 0, errorf(StatusInvalidArgument, "%s is negative (%d)", what, v)
	}
	return C.size_t(v), nil
}

func b2i(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// generation writes o (nil: the model's defaults) into C memory.
func (m *cmem) generation(model *C.parley_model, o *GenerationOptions) (*C.parley_generation_options, error) {
	g := (*C.parley_generation_options)(m.alloc(C.sizeof_parley_generation_options))
	if err := call(func() C.parley_status { return C.parley_generation_options_init(model, g) }); err != nil {
		return nil, err
	}
	if o == nil {
		return g, nil
	}
	var err error
	sizes := []struct {
		name string
		v    int
		dst  *C.size_t
	}{
		{"MaxNewTokens", o.MaxNewTokens, &g.max_new_tokens},
		{"MinNewTokens", o.MinNewTokens, &g.min_new_tokens},
		{"NumBeams", o.NumBeams, &g.num_beams},
		{"NumReturnSequences", o.NumReturnSequences, &g.num_return_sequences},
		{"NoRepeatNgramSize", o.NoRepeatNgramSize, &g.no_repeat_ngram_size},
		{"TopK", o.TopK, &g.top_k},
		{"NumAlternatives", o.NumAlternatives, &g.num_alternatives},
	}
	for _, s := range sizes {
		if *s.dst, err = size(s.name, s.v); err != nil {
			return nil, err
		}
	}
	g.length_penalty = C.float(o.LengthPenalty)
	g.early_stopping = C.int32_t(o.EarlyStopping)
	g.repetition_penalty = C.float(o.RepetitionPenalty)
	g.do_sample = b2i(o.DoSample)
	g.temperature = C.float(o.Temperature)
	g.top_p = C.float(o.TopP)
	g.min_p = C.float(o.MinP)
	g.seed = C.uint64_t(o.Seed)
	g.return_logprobs = b2i(o.ReturnLogprobs)
	if len(o.EOSTokenIDs) > 0 {
		ids, _ := m.tokenRows([][]int32{o.EOSTokenIDs})
		g.eos_token_ids = *ids
		g.num_eos_token_ids = C.size_t(len(o.EOSTokenIDs))
	} else {
		g.eos_token_ids = nil
		g.num_eos_token_ids = 0
	}
	if g.grammar, err = m.cstrOrNil("Grammar", o.Grammar); err != nil {
		return nil, err
	}
	if g.json_schema, err = m.cstrOrNil("JSONSchema", o.JSONSchema); err != nil {
		return nil, err
	}
	return g, nil
}

// TranslationOptions are parley_translation_options; the zero value holds
// the defaults (nil Generation: the model's generation defaults).
type TranslationOptions struct {
	SourceLanguage  string // multilingual models: language code, or ""
	TargetLanguage  string // required by multilingual models
	Generation      *GenerationOptions
	ReturnAttention bool
	AttentionLayer  *int // decoder layer for ReturnAttention; nil: the last
	// PerTextErrors: a text that cannot be translated gets no hypotheses
	// and TranslationResult.Error gives why, instead of failing the call.
	PerTextErrors   bool
	Protect         uint32 // PARLEY_PROTECT_* classes of spans to keep verbatim
	LongText        int32  // parley_long_text
	ProtectPatterns []string
	Glossary        []string
	MaxSourceTokens int
	MaxBatchTokens  int
}

// Flags of TranslationOptions.Protect (parley_protect_flags).
const (
	ProtectNumbers      = C.PARLEY_PROTECT_NUMBERS
	ProtectEmails       = C.PARLEY_PROTECT_EMAILS
	ProtectURLs         = C.PARLEY_PROTECT_URLS
	ProtectPlaceholders = C.PARLEY_PROTECT_PLACEHOLDERS
	ProtectMarkup       = C.PARLEY_PROTECT_MARKUP
	ProtectAll          = C.PARLEY_PROTECT_ALL
)

func (m *cmem) translation(model *C.parley_model, o *TranslationOptions) (*C.parley_translation_options, error) {
	t := (*C.parley_translation_options)(m.alloc(C.sizeof_parley_translation_options))
	if err := call(func() C.parley_status { return C.parley_translation_options_init(t) }); err != nil {
		return nil, err
	}
	if o == nil {
		return t, nil
	}
	var err error
	if t.source_language, err = m.cstrOrNil("SourceLanguage", o.SourceLanguage); err != nil {
		return nil, err
	}
	if t.target_language, err = m.cstrOrNil("TargetLanguage", o.TargetLanguage); err != nil {
		return nil, err
	}
	if o.Generation != nil {
		if t.generation, err = m.generation(model, o.Generation); err != nil {
			return nil, err
		}
	}
	t.return_attention = b2i(o.ReturnAttention)
	if o.AttentionLayer != nil {
		t.attention_layer = C.int32_t(*o.AttentionLayer)
	}
	t.per_text_errors = b2i(o.PerTextErrors)
	t.protect = C.uint32_t(o.Protect)
	t.long_text = C.int32_t(o.LongText)
	if t.protect_patterns, err = m.strings("ProtectPatterns", o.ProtectPatterns); err != nil {
		return nil, err
	}
	t.num_protect_patterns = C.size_t(len(o.ProtectPatterns))
	if t.glossary, err = m.strings("Glossary", o.Glossary); err != nil {
		return nil, err
	}
	t.num_glossary = C.size_t(len(o.Glossary))
	if t.max_source_tokens, err = size("MaxSourceTokens", o.MaxSourceTokens); err != nil {
		return nil, err
	}
	if t.max_batch_tokens, err = size("MaxBatchTokens", o.MaxBatchTokens); err != nil {
		return nil, err
	}
	return t, nil
}

// ChatOptions are parley_chat_options; the zero value holds the defaults.
type ChatOptions struct {
	Generation    *GenerationOptions // nil: the model's generation defaults
	StopStrings   []string           // the reply ends before the first of these
	ContextPolicy int32              // parley_chat_context_policy
}

// Context policies of ChatOptions.ContextPolicy.
const (
	ChatContextError      = C.PARLEY_CHAT_CONTEXT_ERROR
	ChatContextDropOldest = C.PARLEY_CHAT_CONTEXT_DROP_OLDEST
)

func (m *cmem) chat(model *C.parley_model, o *ChatOptions) (*C.parley_chat_options, error) {
	c := (*C.parley_chat_options)(m.alloc(C.sizeof_parley_chat_options))
	if err := call(func() C.parley_status { return C.parley_chat_options_init(c) }); err != nil {
		return nil, err
	}
	if o == nil {
		return c, nil
	}
	var err error
	if o.Generation != nil {
		if c.generation, err = m.generation(model, o.Generation); err != nil {
			return nil, err
		}
	}
	if c.stop_strings, err = m.strings("stop string", o.StopStrings); err != nil {
		return nil, err
	}
	c.num_stop_strings = C.size_t(len(o.StopStrings))
	c.context_policy = C.int32_t(o.ContextPolicy)
	return c, nil
}

// RequestOptions are parley_request_options of a submitted request.
type RequestOptions struct {
	// Deadline after submission (whole milliseconds) after which the request
	// stops with ErrTimeout; 0: none.
	Deadline       time.Duration
	ReturnLogprobs bool
}

func (m *cmem) request(o *RequestOptions) (*C.parley_request_options, error) {
	r := (*C.parley_request_options)(m.alloc(C.sizeof_parley_request_options))
	if err := call(func() C.parley_status { return C.parley_request_options_init(r) }); err != nil {
		return nil, err
	}
	if o == nil {
		return r, nil
	}
	if o.Deadline < 0 {
		return nil, errorf(StatusInvalidArgument, "Deadline is negative (%v)", o.Deadline)
	}
	ms := o.Deadline.Milliseconds()
	if ms == 0 && o.Deadline > 0 {
		ms = 1 // a deadline under a millisecond is not "none"
	}
	r.deadline_ms = C.int64_t(ms)
	r.return_logprobs = b2i(o.ReturnLogprobs)
	return r, nil
}
