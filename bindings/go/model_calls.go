package parley

// #include "parley_go.h"
import "C"

import (
	"context"
)

// Translate translates texts with an encoder-decoder model (parley_translate_n
// on a Parley worker thread). o may be nil. When ctx ends first the
// translation is cancelled between decoding steps and the error is
// ErrCancelled, unwrapping to ctx.Err().
func (model *Model) Translate(ctx context.Context, texts []string, o *TranslationOptions) (*TranslationResult, error) {
	return model.translate(ctx, texts, o, nil)
}

// TranslateStream is Translate with fn called per hypothesis as it grows
// (greedy decoding and sampling; beam search gives the final texts only):
// soFar is the whole hypothesis so far, final marks its last call.
// Returning false ends that hypothesis there (not an error). fn runs on
// the model's serving engine thread (keep it short, never block in it: no
// request of the model steps meanwhile); a panic in fn stops the
// translation and is raised again by TranslateStream.
func (model *Model) TranslateStream(ctx context.Context, texts []string, o *TranslationOptions,
	fn func(text, hypothesis int, soFar string, final bool) bool) (*TranslationResult, error) {
	return model.translate(ctx, texts, o, fn)
}

func (model *Model) translate(ctx context.Context, texts []string, o *TranslationOptions,
	fn func(text, hypothesis int, soFar string, final bool) bool) (*TranslationResult, error) {
	if ctx.Err() != nil {
		return nil, ctxEnded(ctx)
	}
	req, err := model.submitTranslation(texts, o, nil, fn)
	if err != nil {
		return nil, err
	}
	var res *TranslationResult
	err = req.finish(ctx, func() (err error) {
		res, err = req.TakeTranslation()
		return err
	})
	return res, err
}

func (model *Model) submitTranslation(texts []string, o *TranslationOptions, ro *RequestOptions,
	fn func(text, hypothesis int, soFar string, final bool) bool) (*Request, error) {
	var m cmem
	defer m.free()
	to, err := m.translation(model.handle(), o)
	if err != nil {
		return nil, err
	}
	var cb *callback
	if fn != nil {
		cb = newCallback(&callback{translation: fn})
		to.on_text = C.parley_translation_text_fn(C.parley_go_translation_text_fn)
		to.user_data = cb.userData()
	}
	ptrs, lens := m.texts(texts)
	if len(texts) == 0 { // Parley names the empty batch; lengths must not be NULL for that
		lens = (*C.size_t)(m.alloc(C.sizeof_size_t))
	}
	req, err := m.submit(model, cb, ro, func(cro *C.parley_request_options, out **C.parley_request) C.parley_status {
		return C.parley_translate_submit(model.handle(), ptrs, lens, C.size_t(len(texts)), to, cro, out)
	})
	if err != nil {
		cb.release()
		return nil, err
	}
	return req, nil
}

// TranslateSubmit starts a translation and returns at once
// (parley_translate_submit); take its result with Request.TakeTranslation
// and Close the request.
func (model *Model) TranslateSubmit(texts []string, o *TranslationOptions, ro *RequestOptions) (*Request, error) {
	return model.submitTranslation(texts, o, ro, nil)
}

// Generate continues prompts of token ids with a decoder-only model
// (parley_generate on a Parley worker thread); o nil: the model's defaults.
// ctx as for Translate.
func (model *Model) Generate(ctx context.Context, prompts [][]int32, o *GenerationOptions) (*GenerationResult, error) {
	return model.GenerateStream(ctx, prompts, o, nil)
}

// GenerateStream is Generate with fn called for every token a sequence
// generates, in order (greedy decoding and sampling; beam search does not
// stream). Returning false finishes that sequence after this token. fn
// runs on the model's serving engine thread (keep it short, never block in
// it); a panic in fn is raised again.
func (model *Model) GenerateStream(ctx context.Context, prompts [][]int32, o *GenerationOptions,
	fn func(prompt, sequence int, token int32) bool) (*GenerationResult, error) {
	if ctx.Err() != nil {
		return nil, ctxEnded(ctx)
	}
	req, err := model.submitGeneration(prompts, o, nil, fn)
	if err != nil {
		return nil, err
	}
	var res *GenerationResult
	err = req.finish(ctx, func() (err error) {
		res, err = req.TakeGeneration()
		return err
	})
	return res, err
}

// GenerateSubmit starts a generation and returns at once
// (parley_generate_submit); take its result with Request.TakeGeneration.
func (model *Model) GenerateSubmit(prompts [][]int32, o *GenerationOptions, ro *RequestOptions) (*Request, error) {
	return model.submitGeneration(prompts, o, ro, nil)
}

func (model *Model) submitGeneration(prompts [][]int32, o *GenerationOptions, ro *RequestOptions,
	fn func(prompt, sequence int, token int32) bool) (*Request, error) {
	var m cmem
	defer m.free()
	g, err := m.generation(model.handle(), o)
	if err != nil {
		return nil, err
	}
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, errorf(StatusInvalidArgument, "prompt #%d is empty", i)
		}
	}
	var cb *callback
	if fn != nil {
		cb = newCallback(&callback{token: fn})
		g.on_token = C.parley_token_fn(C.parley_go_token_fn)
		g.user_data = cb.userData()
	}
	ptrs, lens := m.tokenRows(prompts)
	req, err := m.submit(model, cb, ro, func(cro *C.parley_request_options, out **C.parley_request) C.parley_status {
		return C.parley_generate_submit(model.handle(), ptrs, lens, C.size_t(len(prompts)), g, cro, out)
	})
	if err != nil {
		cb.release()
	}
	return req, err
}
