package parley

// #include "parley_go.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// Flags of the JSON methods (parley_json_flags).
const (
	JSONNoTokens    = C.PARLEY_JSON_NO_TOKENS    // leave out token ids
	JSONNoAttention = C.PARLEY_JSON_NO_ATTENTION // leave out attention matrices
)

func takeString(s *C.char) string {
	if s == nil {
		return ""
	}
	out := C.GoString(s)
	C.parley_string_free(s)
	return out
}

func takeStringN(s *C.char, n C.size_t) string {
	if s == nil {
		return ""
	}
	out := C.GoStringN(s, C.int(n))
	C.parley_string_free(s)
	return out
}

func ints(p *C.int32_t, n C.size_t) []int32 {
	if n == 0 || p == nil {
		return []int32{}
	}
	return append([]int32(nil), unsafe.Slice((*int32)(unsafe.Pointer(p)), int(n))...)
}

func floats(p *C.float, n C.size_t) []float32 {
	if n == 0 || p == nil {
		return []float32{}
	}
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), int(n))...)
}

// TranslationResult is a parley_translation_result: texts, scores, tokens
// and attention of one translation. Read-only, safe for concurrent use
// except Close. JSON gives it whole (docs/results_json.md).
type TranslationResult struct {
	p *C.parley_translation_result
}

func newTranslationResult(p *C.parley_translation_result) *TranslationResult {
	r := &TranslationResult{p: p}
	runtime.SetFinalizer(r, (*TranslationResult).Close)
	return r
}

func (r *TranslationResult) handle() *C.parley_translation_result {
	if r == nil {
		return nil
	}
	return r.p
}

// Close frees the result; closing twice is harmless.
func (r *TranslationResult) Close() error {
	if r != nil && r.p != nil {
		C.parley_translation_result_free(r.p)
		r.p = nil
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

// Len is the number of texts.
func (r *TranslationResult) Len() int {
	var n C.size_t
	if call(func() C.parley_status { return C.parley_translation_result_count(r.handle(), &n) }) != nil {
		return 0
	}
	runtime.KeepAlive(r)
	return int(n)
}

// HypothesisCount is the number of hypotheses of text i.
func (r *TranslationResult) HypothesisCount(i int) (int, error) {
	var n C.size_t
	err := call(func() C.parley_status {
		return C.parley_translation_result_hypothesis_count(r.handle(), C.size_t(i), &n)
	})
	runtime.KeepAlive(r)
	return int(n), err
}

func index(i int) C.size_t {
	if i < 0 {
		return ^C.size_t(0) // out of range: Parley answers NOT_FOUND
	}
	return C.size_t(i)
}

// Text is hypothesis h (best first) of text i.
func (r *TranslationResult) Text(i, h int) (string, error) {
	var s *C.char
	err := call(func() C.parley_status {
		return C.parley_translation_result_text(r.handle(), index(i), index(h), &s, nil)
	})
	defer runtime.KeepAlive(r)
	if err != nil {
		return "", err
	}
	return C.GoString(s), nil
}

// Score is hypothesis h's score (beam search: length-normalised log-probability).
func (r *TranslationResult) Score(i, h int) (float32, error) {
	var s *C.char
	var score C.float
	err := call(func() C.parley_status {
		return C.parley_translation_result_text(r.handle(), index(i), index(h), &s, &score)
	})
	runtime.KeepAlive(r)
	return float32(score), err
}

// CutByLength reports whether hypothesis h of text i used up MaxNewTokens
// (or the model's positions), so that it may be cut short.
func (r *TranslationResult) CutByLength(i, h int) (bool, error) {
	var cut C.int32_t
	err := call(func() C.parley_status {
		return C.parley_translation_result_cut_by_length(r.handle(), index(i), index(h), &cut)
	})
	runtime.KeepAlive(r)
	return cut != 0, err
}

// SourceTokens are text i's source ids as the model's tokenizer encoded them.
func (r *TranslationResult) SourceTokens(i int) ([]int32, error) {
	var p *C.int32_t
	var n C.size_t
	err := call(func() C.parley_status { return C.parley_translation_result_source_tokens(r.handle(), index(i), &p, &n) })
	defer runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	return ints(p, n), nil
}

// TargetTokens are hypothesis h's generated ids.
func (r *TranslationResult) TargetTokens(i, h int) ([]int32, error) {
	var p *C.int32_t
	var n C.size_t
	err := call(func() C.parley_status {
		return C.parley_translation_result_target_tokens(r.handle(), index(i), index(h), &p, &n)
	})
	defer runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	return ints(p, n), nil
}

// Attention is a hypothesis' source attention: Rows target tokens by Cols
// source tokens, row-major.
type Attention struct {
	Rows, Cols int
	Weights    []float32
}

// At is the weight of target token row on source token col.
func (a Attention) At(row, col int) float32 { return a.Weights[row*a.Cols+col] }

// Attention of hypothesis h of text i (TranslationOptions.ReturnAttention).
func (r *TranslationResult) Attention(i, h int) (Attention, error) {
	var w *C.float
	var rows, cols C.size_t
	err := call(func() C.parley_status {
		return C.parley_translation_result_attention(r.handle(), index(i), index(h), &w, &rows, &cols)
	})
	defer runtime.KeepAlive(r)
	if err != nil {
		return Attention{}, err
	}
	return Attention{Rows: int(rows), Cols: int(cols), Weights: floats(w, rows*cols)}, nil
}

// TextError is why text i has no translation (TranslationOptions.PerTextErrors):
// nil for a translated text. The second value is the call's own error.
func (r *TranslationResult) TextError(i int) (*Error, error) {
	var st C.int32_t
	var msg *C.char
	err := call(func() C.parley_status { return C.parley_translation_result_error(r.handle(), index(i), &st, &msg) })
	defer runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	if st == C.PARLEY_OK {
		return nil, nil
	}
	return &Error{Status: Status(st), Message: C.GoString(msg)}, nil
}

// JSON is the whole result as one document (parley_translation_result_json).
func (r *TranslationResult) JSON(flags uint32) (string, error) {
	var s *C.char
	var n C.size_t
	err := call(func() C.parley_status {
		return C.parley_translation_result_json(r.handle(), C.uint32_t(flags), &s, &n)
	})
	runtime.KeepAlive(r)
	return takeStringN(s, n), err
}

// GenerationResult is a parley_generation_result: the hypotheses of one
// generation. Read-only, safe for concurrent use except Close.
type GenerationResult struct {
	p *C.parley_generation_result
}

func newGenerationResult(p *C.parley_generation_result) *GenerationResult {
	r := &GenerationResult{p: p}
	runtime.SetFinalizer(r, (*GenerationResult).Close)
	return r
}

func (r *GenerationResult) handle() *C.parley_generation_result {
	if r == nil {
		return nil
	}
	return r.p
}

// Close frees the result; closing twice is harmless.
func (r *GenerationResult) Close() error {
	if r != nil && r.p != nil {
		C.parley_result_free(r.p)
		r.p = nil
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

// Len is the number of prompts.
func (r *GenerationResult) Len() int {
	var n C.size_t
	if call(func() C.parley_status { return C.parley_result_batch_size(r.handle(), &n) }) != nil {
		return 0
	}
	runtime.KeepAlive(r)
	return int(n)
}

// HypothesisCount is the number of hypotheses of prompt b.
func (r *GenerationResult) HypothesisCount(b int) (int, error) {
	var n C.size_t
	err := call(func() C.parley_status { return C.parley_result_hypothesis_count(r.handle(), index(b), &n) })
	runtime.KeepAlive(r)
	return int(n), err
}

// Tokens are hypothesis h's generated ids and Score its score.
func (r *GenerationResult) Tokens(b, h int) ([]int32, error) {
	ids, _, err := r.hypothesis(b, h)
	return ids, err
}

// Score of hypothesis h of prompt b.
func (r *GenerationResult) Score(b, h int) (float32, error) {
	_, score, err := r.hypothesis(b, h)
	return score, err
}

func (r *GenerationResult) hypothesis(b, h int) ([]int32, float32, error) {
	var p *C.int32_t
	var n C.size_t
	var score C.float
	err := call(func() C.parley_status {
		return C.parley_result_hypothesis(r.handle(), index(b), index(h), &p, &n, &score)
	})
	defer runtime.KeepAlive(r)
	if err != nil {
		return nil, 0, err
	}
	return ints(p, n), float32(score), nil
}

// Logprobs are hypothesis h's per-token log-probabilities (ReturnLogprobs).
func (r *GenerationResult) Logprobs(b, h int) ([]float32, error) {
	var p *C.float
	var n C.size_t
	err := call(func() C.parley_status {
		return C.parley_result_hypothesis_logprobs(r.handle(), index(b), index(h), &p, &n)
	})
	defer runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	return floats(p, n), nil
}

// JSON is the whole result as one document (parley_result_json).
func (r *GenerationResult) JSON(flags uint32) (string, error) {
	var s *C.char
	var n C.size_t
	err := call(func() C.parley_status { return C.parley_result_json(r.handle(), C.uint32_t(flags), &s, &n) })
	runtime.KeepAlive(r)
	return takeStringN(s, n), err
}
