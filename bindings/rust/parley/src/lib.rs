//! Safe Rust handles over Parley's C API (`include/parley/parley.h`).
//!
//! - Every handle frees its C object in `Drop`; none is `Clone`.
//! - Every failing call returns `Err(Error)` with the `parley_status` and
//!   `parley_last_error()` message of that call.
//! - `Send`/`Sync` follow the header: a `Runtime` and a `Model` may be used
//!   by several threads at once; results are read-only; a chat session
//!   answers a second concurrent call with `PARLEY_ERROR_BUSY` (so it is
//!   `Sync`, and `cancel` works from another thread); a request's functions
//!   may be called from any thread. Freeing happens only in `Drop`, which
//!   Rust runs once nothing else borrows the handle.
//! - Strings the C API returns that stay valid only "until the session
//!   changes" are copied; those owned by an immutable result are borrowed.
//! - Streaming: a closure (`generate_streaming`, `translate_streaming`) or an
//!   iterator (`ChatSession::stream`). A panic in a closure stops the call and
//!   is resumed once Parley has returned; it never unwinds through C. The
//!   closures must be `Send`: the header does not promise that a blocking
//!   call invokes them on the calling thread (the serving engine batches
//!   requests), only that the call waits for them.
use parley_sys as sys;
use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::mpsc;
use std::sync::Mutex;

/// Status codes (`parley_status_code`) as the `i32` every function returns.
pub mod status {
    use parley_sys as sys;
    pub const OK: i32 = sys::PARLEY_OK as i32;
    pub const INVALID_ARGUMENT: i32 = sys::PARLEY_ERROR_INVALID_ARGUMENT as i32;
    pub const OUT_OF_MEMORY: i32 = sys::PARLEY_ERROR_OUT_OF_MEMORY as i32;
    pub const IO: i32 = sys::PARLEY_ERROR_IO as i32;
    pub const INVALID_MODEL: i32 = sys::PARLEY_ERROR_INVALID_MODEL as i32;
    pub const UNSUPPORTED_VERSION: i32 = sys::PARLEY_ERROR_UNSUPPORTED_VERSION as i32;
    pub const CHECKSUM: i32 = sys::PARLEY_ERROR_CHECKSUM as i32;
    pub const NOT_FOUND: i32 = sys::PARLEY_ERROR_NOT_FOUND as i32;
    pub const PLUGIN: i32 = sys::PARLEY_ERROR_PLUGIN as i32;
    pub const DEVICE: i32 = sys::PARLEY_ERROR_DEVICE as i32;
    pub const UNSUPPORTED: i32 = sys::PARLEY_ERROR_UNSUPPORTED as i32;
    pub const INTERNAL: i32 = sys::PARLEY_ERROR_INTERNAL as i32;
    pub const CANCELLED: i32 = sys::PARLEY_ERROR_CANCELLED as i32;
    pub const BUSY: i32 = sys::PARLEY_ERROR_BUSY as i32;
    pub const TIMEOUT: i32 = sys::PARLEY_ERROR_TIMEOUT as i32;
}

/// A failed Parley call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: i32,
    message: String,
}

impl Error {
    pub fn status(&self) -> i32 {
        self.status
    }
    /// "PARLEY_ERROR_NOT_FOUND", ...
    pub fn status_name(&self) -> &'static str {
        status_name(self.status)
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    fn new(status: i32, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status_name(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The static name of a status code.
pub fn status_name(status: i32) -> &'static str {
    // Static storage (parley.h); the names are ASCII.
    unsafe { CStr::from_ptr(sys::parley_status_name(status)) }.to_str().unwrap_or("PARLEY_ERROR_UNKNOWN")
}

/// The loaded library's version string, e.g. "0.1.0".
pub fn version() -> &'static str {
    unsafe { CStr::from_ptr(sys::parley_version_string()) }.to_str().unwrap_or("")
}

fn check(st: sys::parley_status) -> Result<()> {
    if st == status::OK {
        Ok(())
    } else {
        let message = unsafe { CStr::from_ptr(sys::parley_last_error()) }.to_string_lossy().into_owned();
        Err(Error::new(st, message))
    }
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|e| {
        Error::new(status::INVALID_ARGUMENT, format!("{} contains a NUL byte at byte offset {}", what, e.nul_position()))
    })
}

unsafe fn borrowed_str<'a>(p: *const c_char) -> &'a str {
    if p.is_null() {
        ""
    } else {
        // Parley's texts are UTF-8 (decoding writes U+FFFD for bad bytes).
        CStr::from_ptr(p).to_str().unwrap_or("")
    }
}

unsafe fn take_string(p: *mut c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    let s = CStr::from_ptr(p).to_string_lossy().into_owned();
    sys::parley_string_free(p);
    s
}

unsafe fn take_json(p: *mut c_char, n: usize) -> String {
    let bytes = std::slice::from_raw_parts(p as *const u8, n);
    let s = String::from_utf8_lossy(bytes).into_owned();
    sys::parley_string_free(p);
    s
}

unsafe fn slice<'a, T>(p: *const T, n: usize) -> &'a [T] {
    if n == 0 || p.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(p, n)
    }
}

/// Flags of the `json` methods (docs/results_json.md).
pub const JSON_NO_TOKENS: u32 = sys::PARLEY_JSON_NO_TOKENS as u32;
pub const JSON_NO_ATTENTION: u32 = sys::PARLEY_JSON_NO_ATTENTION as u32;

// ---------------------------------------------------------------- runtime

/// A thread pool, a kernel registry and plugins.
pub struct Runtime {
    raw: *mut sys::parley_runtime,
}

// parley.h: "a parley_runtime may be used from several threads at once
// except that parley_runtime_free must not race" (Drop is exclusive).
unsafe impl Send for Runtime {}
unsafe impl Sync for Runtime {}

impl Runtime {
    /// A runtime with the default plugin locations and threads.
    pub fn new() -> Result<Runtime> {
        let mut raw = ptr::null_mut();
        check(unsafe { sys::parley_runtime_create(ptr::null(), &mut raw) })?;
        Ok(Runtime { raw })
    }

    /// A runtime loading plugins only from `dirs`; `num_threads` 0: one per CPU.
    pub fn with_plugin_dirs(dirs: &[&str], num_threads: i32) -> Result<Runtime> {
        let owned = dirs.iter().map(|d| cstring(d, "plugin dir")).collect::<Result<Vec<_>>>()?;
        let ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        let mut o = std::mem::MaybeUninit::<sys::parley_runtime_options>::zeroed();
        check(unsafe { sys::parley_runtime_options_init(o.as_mut_ptr()) })?;
        let mut o = unsafe { o.assume_init() };
        o.plugin_sources = sys::PARLEY_PLUGINS_NONE;
        o.plugin_dirs = ptrs.as_ptr();
        o.num_plugin_dirs = ptrs.len();
        o.num_threads = num_threads;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::parley_runtime_create(&o, &mut raw) })?;
        Ok(Runtime { raw })
    }

    pub fn load_plugin(&self, path: &str) -> Result<()> {
        let p = cstring(path, "path")?;
        check(unsafe { sys::parley_runtime_load_plugin(self.raw, p.as_ptr()) })
    }

    pub fn as_ptr(&self) -> *mut sys::parley_runtime {
        self.raw
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        unsafe { sys::parley_runtime_free(self.raw) }
    }
}

// ---------------------------------------------------------------- options

/// Decoding settings; `None` keeps the model's generation default.
#[derive(Debug, Clone, Default)]
pub struct GenerationOptions {
    pub max_new_tokens: Option<usize>,
    pub min_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    pub num_return_sequences: Option<usize>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub seed: Option<u64>,
}

impl GenerationOptions {
    fn to_c(&self, model: &Model) -> Result<sys::parley_generation_options> {
        let mut g = std::mem::MaybeUninit::<sys::parley_generation_options>::zeroed();
        check(unsafe { sys::parley_generation_options_init(model.raw, g.as_mut_ptr()) })?;
        let mut g = unsafe { g.assume_init() };
        if let Some(v) = self.max_new_tokens {
            g.max_new_tokens = v;
        }
        if let Some(v) = self.min_new_tokens {
            g.min_new_tokens = v;
        }
        if let Some(v) = self.num_beams {
            g.num_beams = v;
        }
        if let Some(v) = self.num_return_sequences {
            g.num_return_sequences = v;
        }
        if let Some(v) = self.do_sample {
            g.do_sample = v as i32;
        }
        if let Some(v) = self.temperature {
            g.temperature = v;
        }
        if let Some(v) = self.seed {
            g.seed = v;
        }
        Ok(g)
    }
}

/// Text translation settings.
#[derive(Debug, Clone, Default)]
pub struct TranslationOptions {
    pub generation: GenerationOptions,
    pub source_language: Option<String>,
    pub target_language: Option<String>,
    /// Keep each hypothesis' source attention.
    pub return_attention: bool,
    /// A text that cannot be translated fails alone (`TranslationResult::error`).
    pub per_text_errors: bool,
}

/// Chat turn settings.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    pub generation: GenerationOptions,
    pub stop_strings: Vec<String>,
}

/// Background request settings.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Milliseconds after submission at which the request stops with TIMEOUT (0: none).
    pub deadline_ms: i64,
    /// Record per-token log-probabilities.
    pub return_logprobs: bool,
}

impl RequestOptions {
    fn to_c(&self) -> Result<sys::parley_request_options> {
        let mut o = std::mem::MaybeUninit::<sys::parley_request_options>::zeroed();
        check(unsafe { sys::parley_request_options_init(o.as_mut_ptr()) })?;
        let mut o = unsafe { o.assume_init() };
        o.deadline_ms = self.deadline_ms;
        o.return_logprobs = self.return_logprobs as i32;
        Ok(o)
    }
}

// ---------------------------------------------------------------- model

/// A loaded model file; immutable and shareable by threads.
pub struct Model {
    raw: *mut sys::parley_model,
}

// parley.h: "A parley_model is immutable after loading and may be shared by
// any number of threads"; freeing (Drop) must not race with other uses.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

/// A row-major [rows x cols] view of attention weights.
#[derive(Debug, Clone, Copy)]
pub struct Attention<'a> {
    pub weights: &'a [f32],
    /// target tokens
    pub rows: usize,
    /// source tokens
    pub cols: usize,
}

impl<'a> Attention<'a> {
    pub fn at(&self, row: usize, col: usize) -> f32 {
        self.weights[row * self.cols + col]
    }
}

struct TranslationStream<F> {
    f: F,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn translation_trampoline<F: FnMut(usize, usize, &str, bool) -> bool>(
    user_data: *mut c_void,
    text: usize,
    hypothesis: usize,
    t: *const c_char,
    length: usize,
    is_final: i32,
) -> i32 {
    let s = &mut *(user_data as *mut TranslationStream<F>);
    if s.panic.is_some() {
        return 1;
    }
    let bytes = slice(t as *const u8, length);
    let piece = String::from_utf8_lossy(bytes);
    match catch_unwind(AssertUnwindSafe(|| (s.f)(text, hypothesis, &piece, is_final != 0))) {
        Ok(go_on) => (!go_on) as i32,
        Err(p) => {
            s.panic = Some(p);
            1
        }
    }
}

impl Model {
    /// parley_model_load_file with default options.
    pub fn load(runtime: &Runtime, path: &str) -> Result<Model> {
        Model::load_on(runtime, path, None)
    }

    /// parley_model_load_file on `device` (None: "cpu").
    pub fn load_on(runtime: &Runtime, path: &str, device: Option<&str>) -> Result<Model> {
        let p = cstring(path, "path")?;
        let d = match device {
            Some(d) => Some(cstring(d, "device")?),
            None => None,
        };
        let mut o = std::mem::MaybeUninit::<sys::parley_model_options>::zeroed();
        check(unsafe { sys::parley_model_options_init(o.as_mut_ptr()) })?;
        let mut o = unsafe { o.assume_init() };
        if let Some(d) = &d {
            o.device = d.as_ptr();
        }
        let mut raw = ptr::null_mut();
        check(unsafe { sys::parley_model_load_file(runtime.raw, p.as_ptr(), &o, &mut raw) })?;
        Ok(Model { raw })
    }

    /// parley_model_load_memory: a copy of `bytes`.
    pub fn load_memory(runtime: &Runtime, bytes: &[u8]) -> Result<Model> {
        let mut raw = ptr::null_mut();
        check(unsafe {
            sys::parley_model_load_memory(runtime.raw, bytes.as_ptr() as *const c_void, bytes.len(), ptr::null(), &mut raw)
        })?;
        Ok(Model { raw })
    }

    pub fn as_ptr(&self) -> *mut sys::parley_model {
        self.raw
    }

    /// The Hugging Face architecture name, e.g. "MarianMTModel".
    pub fn architecture(&self) -> Result<String> {
        let mut info = std::mem::MaybeUninit::<sys::parley_model_info>::zeroed();
        unsafe { (*info.as_mut_ptr()).struct_size = std::mem::size_of::<sys::parley_model_info>() };
        check(unsafe { sys::parley_model_get_info(self.raw, info.as_mut_ptr()) })?;
        Ok(unsafe { borrowed_str(info.assume_init().architecture) }.to_owned())
    }

    pub fn verify_tensor(&self, name: &str) -> Result<()> {
        let n = cstring(name, "name")?;
        check(unsafe { sys::parley_model_verify_tensor(self.raw, n.as_ptr()) })
    }

    /// Token ids of `text`, with the special tokens the model's tokenizer adds.
    pub fn tokenize(&self, text: &str) -> Result<Vec<i32>> {
        let mut n = 0usize;
        let p = text.as_ptr() as *const c_char;
        let flags = sys::PARLEY_TOKENIZE_ADD_SPECIAL as i32;
        check(unsafe { sys::parley_tokenize_n(self.raw, p, text.len(), flags, ptr::null(), ptr::null_mut(), 0, &mut n) })?;
        let mut ids = vec![0i32; n];
        check(unsafe {
            sys::parley_tokenize_n(self.raw, p, text.len(), flags, ptr::null(), ids.as_mut_ptr(), ids.len(), &mut n)
        })?;
        Ok(ids)
    }

    fn translate_raw(
        &self,
        texts: &[&str],
        options: &TranslationOptions,
        on_text: sys::parley_translation_text_fn,
        user_data: *mut c_void,
    ) -> Result<TranslationResult> {
        let g = options.generation.to_c(self)?;
        let src = match &options.source_language {
            Some(s) => Some(cstring(s, "source_language")?),
            None => None,
        };
        let tgt = match &options.target_language {
            Some(s) => Some(cstring(s, "target_language")?),
            None => None,
        };
        let mut o = std::mem::MaybeUninit::<sys::parley_translation_options>::zeroed();
        check(unsafe { sys::parley_translation_options_init(o.as_mut_ptr()) })?;
        let mut o = unsafe { o.assume_init() };
        o.generation = &g;
        o.source_language = src.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        o.target_language = tgt.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        o.return_attention = options.return_attention as i32;
        o.per_text_errors = options.per_text_errors as i32;
        o.on_text = on_text;
        o.user_data = user_data;
        // Texts go with their byte lengths (parley_translate_n): no NUL
        // terminator needed, and a NUL inside is refused, not cut.
        let ptrs: Vec<*const c_char> = texts.iter().map(|t| t.as_ptr() as *const c_char).collect();
        let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let mut raw = ptr::null_mut();
        check(unsafe { sys::parley_translate_n(self.raw, ptrs.as_ptr(), lengths.as_ptr(), texts.len(), &o, &mut raw) })?;
        Ok(TranslationResult { raw })
    }

    /// Translate a batch of texts (an encoder-decoder model).
    pub fn translate(&self, texts: &[&str], options: &TranslationOptions) -> Result<TranslationResult> {
        self.translate_raw(texts, options, None, ptr::null_mut())
    }

    /// Translate, streaming each hypothesis' text so far to `f(text, hypothesis, text_so_far, is_final)`;
    /// `f` returns false to finish that hypothesis.
    pub fn translate_streaming<F: FnMut(usize, usize, &str, bool) -> bool + Send>(
        &self,
        texts: &[&str],
        options: &TranslationOptions,
        f: F,
    ) -> Result<TranslationResult> {
        let mut s = TranslationStream { f, panic: None };
        let r = self.translate_raw(
            texts,
            options,
            Some(translation_trampoline::<F>),
            &mut s as *mut TranslationStream<F> as *mut c_void,
        );
        if let Some(p) = s.panic.take() {
            resume_unwind(p);
        }
        r
    }

    /// Generate continuations of token prompts (a decoder-only model).
    pub fn generate(&self, prompts: &[&[i32]], options: &GenerationOptions) -> Result<GenerationResult> {
        let g = options.to_c(self)?;
        let ptrs: Vec<*const i32> = prompts.iter().map(|p| p.as_ptr()).collect();
        let lengths: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
        let mut raw = ptr::null_mut();
        check(unsafe { sys::parley_generate(self.raw, ptrs.as_ptr(), lengths.as_ptr(), prompts.len(), &g, &mut raw) })?;
        Ok(GenerationResult { raw })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { sys::parley_model_free(self.raw) }
    }
}

// ---------------------------------------------------------------- results

/// Texts, scores, tokens and attention of one translation call.
pub struct TranslationResult {
    raw: *mut sys::parley_translation_result,
}

// Results are immutable; their accessors are thread-safe (parley.h).
unsafe impl Send for TranslationResult {}
unsafe impl Sync for TranslationResult {}

impl TranslationResult {
    pub fn len(&self) -> usize {
        let mut n = 0;
        let _ = check(unsafe { sys::parley_translation_result_count(self.raw, &mut n) });
        n
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn hypothesis_count(&self, text: usize) -> Result<usize> {
        let mut n = 0;
        check(unsafe { sys::parley_translation_result_hypothesis_count(self.raw, text, &mut n) })?;
        Ok(n)
    }
    pub fn text(&self, text: usize, hypothesis: usize) -> Result<&str> {
        let mut t = ptr::null();
        check(unsafe { sys::parley_translation_result_text(self.raw, text, hypothesis, &mut t, ptr::null_mut()) })?;
        Ok(unsafe { borrowed_str(t) })
    }
    pub fn score(&self, text: usize, hypothesis: usize) -> Result<f32> {
        let mut t = ptr::null();
        let mut s = 0f32;
        check(unsafe { sys::parley_translation_result_text(self.raw, text, hypothesis, &mut t, &mut s) })?;
        Ok(s)
    }
    /// Whether the hypothesis used up max_new_tokens (or the model's positions): it may be cut short.
    pub fn cut_by_length(&self, text: usize, hypothesis: usize) -> Result<bool> {
        let mut cut = 0i32;
        check(unsafe { sys::parley_translation_result_cut_by_length(self.raw, text, hypothesis, &mut cut) })?;
        Ok(cut != 0)
    }
    pub fn source_tokens(&self, text: usize) -> Result<&[i32]> {
        let (mut p, mut n) = (ptr::null(), 0);
        check(unsafe { sys::parley_translation_result_source_tokens(self.raw, text, &mut p, &mut n) })?;
        Ok(unsafe { slice(p, n) })
    }
    pub fn target_tokens(&self, text: usize, hypothesis: usize) -> Result<&[i32]> {
        let (mut p, mut n) = (ptr::null(), 0);
        check(unsafe { sys::parley_translation_result_target_tokens(self.raw, text, hypothesis, &mut p, &mut n) })?;
        Ok(unsafe { slice(p, n) })
    }
    /// NOT_FOUND when attention was not requested.
    pub fn attention(&self, text: usize, hypothesis: usize) -> Result<Attention<'_>> {
        let (mut p, mut rows, mut cols) = (ptr::null(), 0, 0);
        check(unsafe { sys::parley_translation_result_attention(self.raw, text, hypothesis, &mut p, &mut rows, &mut cols) })?;
        Ok(Attention { weights: unsafe { slice(p, rows * cols) }, rows, cols })
    }
    /// With per_text_errors: the text's status (OK when translated) and message.
    pub fn error(&self, text: usize) -> Result<(i32, &str)> {
        let (mut st, mut m) = (0i32, ptr::null());
        check(unsafe { sys::parley_translation_result_error(self.raw, text, &mut st, &mut m) })?;
        Ok((st, unsafe { borrowed_str(m) }))
    }
    /// The whole result as JSON (docs/results_json.md).
    pub fn json(&self, flags: u32) -> Result<String> {
        let (mut p, mut n) = (ptr::null_mut(), 0);
        check(unsafe { sys::parley_translation_result_json(self.raw, flags, &mut p, &mut n) })?;
        Ok(unsafe { take_json(p, n) })
    }
}

impl Drop for TranslationResult {
    fn drop(&mut self) {
        unsafe { sys::parley_translation_result_free(self.raw) }
    }
}

/// Hypotheses of one generate / translate_tokens call.
pub struct GenerationResult {
    raw: *mut sys::parley_generation_result,
}

unsafe impl Send for GenerationResult {}
unsafe impl Sync for GenerationResult {}

impl GenerationResult {
    pub fn len(&self) -> usize {
        let mut n = 0;
        let _ = check(unsafe { sys::parley_result_batch_size(self.raw, &mut n) });
        n
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn hypothesis_count(&self, item: usize) -> Result<usize> {
        let mut n = 0;
        check(unsafe { sys::parley_result_hypothesis_count(self.raw, item, &mut n) })?;
        Ok(n)
    }
    pub fn tokens(&self, item: usize, hypothesis: usize) -> Result<&[i32]> {
        let (mut p, mut n) = (ptr::null(), 0);
        check(unsafe { sys::parley_result_hypothesis(self.raw, item, hypothesis, &mut p, &mut n, ptr::null_mut()) })?;
        Ok(unsafe { slice(p, n) })
    }
    pub fn score(&self, item: usize, hypothesis: usize) -> Result<f32> {
        let (mut p, mut n, mut s) = (ptr::null(), 0, 0f32);
        check(unsafe { sys::parley_result_hypothesis(self.raw, item, hypothesis, &mut p, &mut n, &mut s) })?;
        Ok(s)
    }
    pub fn json(&self, flags: u32) -> Result<String> {
        let (mut p, mut n) = (ptr::null_mut(), 0);
        check(unsafe { sys::parley_result_json(self.raw, flags, &mut p, &mut n) })?;
        Ok(unsafe { take_json(p, n) })
    }
}

impl Drop for GenerationResult {
    fn drop(&mut self) {
        unsafe { sys::parley_result_free(self.raw) }
    }
}

// ---------------------------------------------------------------- chat

/// Message roles (`parley_chat_role`).
pub mod role {
    use parley_sys as sys;
    pub const SYSTEM: i32 = sys::PARLEY_ROLE_SYSTEM as i32;
    pub const USER: i32 = sys::PARLEY_ROLE_USER as i32;
    pub const ASSISTANT: i32 = sys::PARLEY_ROLE_ASSISTANT as i32;
    pub const TOOL: i32 = sys::PARLEY_ROLE_TOOL as i32;
}

/// A conversation with a decoder-only model; the model outlives it.
pub struct ChatSession<'m> {
    raw: *mut sys::parley_chat_session,
    model: &'m Model,
}

// parley.h: a call on a session while another runs (another thread, or its
// own callback) returns PARLEY_ERROR_BUSY and changes nothing, and
// parley_chat_cancel may be called from any thread; freeing is Drop's.
// Texts the session owns are copied out (they change with the session).
unsafe impl<'m> Send for ChatSession<'m> {}
unsafe impl<'m> Sync for ChatSession<'m> {}

struct ChatCallback<F> {
    f: F,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn chat_trampoline<F: FnMut(&str) -> bool>(user_data: *mut c_void, text: *const c_char, length: usize) -> i32 {
    let s = &mut *(user_data as *mut ChatCallback<F>);
    if s.panic.is_some() {
        return 1;
    }
    let piece = String::from_utf8_lossy(slice(text as *const u8, length));
    match catch_unwind(AssertUnwindSafe(|| (s.f)(&piece))) {
        Ok(go_on) => (!go_on) as i32,
        Err(p) => {
            s.panic = Some(p);
            1
        }
    }
}

/// What a streaming request's callbacks share with its iterator.
struct StreamShared {
    tx: Mutex<Option<mpsc::Sender<String>>>,
}

unsafe extern "C" fn stream_piece(user_data: *mut c_void, text: *const c_char, length: usize) -> i32 {
    let s = &*(user_data as *const StreamShared);
    let piece = String::from_utf8_lossy(slice(text as *const u8, length)).into_owned();
    if let Ok(guard) = s.tx.lock() {
        if let Some(tx) = guard.as_ref() {
            // The receiver gone (iterator dropped): stop the reply.
            return tx.send(piece).is_err() as i32;
        }
    }
    1
}

unsafe extern "C" fn stream_done(user_data: *mut c_void, _request: *mut sys::parley_request, _status: i32) {
    let s = &*(user_data as *const StreamShared);
    if let Ok(mut guard) = s.tx.lock() {
        guard.take(); // closes the channel: the iterator ends
    }
}

impl<'m> ChatSession<'m> {
    /// A session; `system_prompt` None: no system message.
    pub fn new(model: &'m Model, system_prompt: Option<&str>) -> Result<ChatSession<'m>> {
        let mut raw = ptr::null_mut();
        let (p, n) = match system_prompt {
            Some(s) => (s.as_ptr() as *const c_char, s.len()),
            None => (ptr::null(), 0),
        };
        check(unsafe { sys::parley_chat_session_create_n(model.raw, p, n, &mut raw) })?;
        Ok(ChatSession { raw, model })
    }

    /// role: see `role`.
    pub fn append(&self, role: i32, content: &str) -> Result<()> {
        check(unsafe { sys::parley_chat_append_n(self.raw, role, content.as_ptr() as *const c_char, content.len()) })
    }

    fn c_options(&self, generation: &sys::parley_generation_options) -> Result<sys::parley_chat_options> {
        let mut o = std::mem::MaybeUninit::<sys::parley_chat_options>::zeroed();
        check(unsafe { sys::parley_chat_options_init(o.as_mut_ptr()) })?;
        let mut o = unsafe { o.assume_init() };
        o.generation = generation;
        Ok(o)
    }

    fn generation(&self, options: &ChatOptions) -> Result<sys::parley_generation_options> {
        options.generation.to_c(self.model)
    }

    fn run(
        &self,
        options: &ChatOptions,
        on_text: sys::parley_text_fn,
        user_data: *mut c_void,
    ) -> Result<String> {
        let g = self.generation(options)?;
        let stops = options.stop_strings.iter().map(|s| cstring(s, "stop string")).collect::<Result<Vec<_>>>()?;
        let stop_ptrs: Vec<*const c_char> = stops.iter().map(|c| c.as_ptr()).collect();
        let mut o = self.c_options(&g)?;
        o.stop_strings = if stop_ptrs.is_empty() { ptr::null() } else { stop_ptrs.as_ptr() };
        o.num_stop_strings = stop_ptrs.len();
        o.on_text = on_text;
        o.user_data = user_data;
        let mut reply = ptr::null_mut();
        let st = unsafe { sys::parley_chat_generate(self.raw, &o, &mut reply) };
        let text = unsafe { take_string(reply) };
        check(st)?;
        Ok(text)
    }

    /// The assistant's reply (appended to the conversation); the model's
    /// generation defaults fill what `options` leaves None.
    pub fn generate(&self, options: &ChatOptions) -> Result<String> {
        self.run(options, None, ptr::null_mut())
    }

    /// The reply, streamed to `f` piece by piece (UTF-8, never a split code
    /// point); `f` returns false to end the reply there.
    pub fn generate_streaming<F: FnMut(&str) -> bool + Send>(&self, options: &ChatOptions, f: F) -> Result<String> {
        let mut cb = ChatCallback { f, panic: None };
        let r = self.run(options, Some(chat_trampoline::<F>), &mut cb as *mut ChatCallback<F> as *mut c_void);
        if let Some(p) = cb.panic.take() {
            resume_unwind(p);
        }
        r
    }

    /// The reply as an iterator of pieces, generated on a worker thread
    /// (parley_chat_submit); `ReplyStream::finish` gives the outcome.
    pub fn stream(&self, options: &ChatOptions) -> Result<ReplyStream<'_>> {
        let g = self.generation(options)?;
        let mut o = self.c_options(&g)?;
        let (tx, rx) = mpsc::channel();
        let shared = Box::new(StreamShared { tx: Mutex::new(Some(tx)) });
        let user_data = &*shared as *const StreamShared as *mut c_void;
        o.on_text = Some(stream_piece);
        o.user_data = user_data;
        let mut ro = RequestOptions::default().to_c()?;
        ro.on_complete = Some(stream_done);
        ro.user_data = user_data;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::parley_chat_submit(self.raw, &o, &ro, &mut raw) })?;
        Ok(ReplyStream { request: Request { raw, _owner: PhantomData }, rx, _shared: shared })
    }

    /// Stop a running generate soon (any thread); it fails with CANCELLED.
    pub fn cancel(&self) -> Result<()> {
        check(unsafe { sys::parley_chat_cancel(self.raw) })
    }

    pub fn remove_last(&self) -> Result<()> {
        check(unsafe { sys::parley_chat_remove_last(self.raw) })
    }

    pub fn message_count(&self) -> Result<usize> {
        let mut n = 0;
        check(unsafe { sys::parley_chat_message_count(self.raw, &mut n) })?;
        Ok(n)
    }

    /// Role and content of message `index` (copied: the session may change).
    pub fn message(&self, index: usize) -> Result<(i32, String)> {
        let (mut role, mut content) = (0i32, ptr::null());
        check(unsafe { sys::parley_chat_message(self.raw, index, &mut role, &mut content) })?;
        Ok((role, unsafe { borrowed_str(content) }.to_owned()))
    }

    /// Submit a turn to run in the background (parley_chat_submit).
    pub fn submit(&self, options: &ChatOptions, request: &RequestOptions) -> Result<Request<'_>> {
        let g = self.generation(options)?;
        let o = self.c_options(&g)?;
        let ro = request.to_c()?;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::parley_chat_submit(self.raw, &o, &ro, &mut raw) })?;
        Ok(Request { raw, _owner: PhantomData })
    }
}

impl<'m> Drop for ChatSession<'m> {
    fn drop(&mut self) {
        unsafe { sys::parley_chat_session_free(self.raw) }
    }
}

// ---------------------------------------------------------------- requests

/// A request running on a Parley worker thread. Dropping it cancels and waits.
pub struct Request<'a> {
    raw: *mut sys::parley_request,
    _owner: PhantomData<&'a ()>,
}

// parley.h: every request function may be called from any thread, also
// concurrently, except parley_request_free (Drop).
unsafe impl<'a> Send for Request<'a> {}
unsafe impl<'a> Sync for Request<'a> {}

impl<'a> Request<'a> {
    /// true when done; false when `timeout_ms` passed first (negative: no limit).
    pub fn wait(&self, timeout_ms: i64) -> Result<bool> {
        let st = unsafe { sys::parley_request_wait(self.raw, timeout_ms) };
        if st == status::TIMEOUT {
            return Ok(false);
        }
        check(st)?;
        Ok(true)
    }
    pub fn cancel(&self) -> Result<()> {
        check(unsafe { sys::parley_request_cancel(self.raw) })
    }
    /// The request's own status (BUSY while it runs) and message.
    pub fn status(&self) -> Result<(i32, String)> {
        let (mut st, mut m) = (0i32, ptr::null());
        check(unsafe { sys::parley_request_status(self.raw, &mut st, &mut m) })?;
        Ok((st, unsafe { borrowed_str(m) }.to_owned()))
    }
    /// A chat turn's reply; the request's own error when it failed.
    pub fn take_reply(&self) -> Result<String> {
        let mut p = ptr::null_mut();
        check(unsafe { sys::parley_request_take_reply(self.raw, &mut p) })?;
        Ok(unsafe { take_string(p) })
    }
    /// The request as JSON (docs/results_json.md).
    pub fn json(&self, flags: u32) -> Result<String> {
        let (mut p, mut n) = (ptr::null_mut(), 0);
        check(unsafe { sys::parley_request_json(self.raw, flags, &mut p, &mut n) })?;
        Ok(unsafe { take_json(p, n) })
    }
}

impl<'a> Drop for Request<'a> {
    fn drop(&mut self) {
        unsafe { sys::parley_request_free(self.raw) }
    }
}

/// A chat reply arriving piece by piece (`ChatSession::stream`).
pub struct ReplyStream<'a> {
    // Dropped first: freeing the request cancels and waits for its worker,
    // which uses `_shared` until then.
    request: Request<'a>,
    rx: mpsc::Receiver<String>,
    _shared: Box<StreamShared>,
}

impl<'a> Iterator for ReplyStream<'a> {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        self.rx.recv().ok()
    }
}

impl<'a> ReplyStream<'a> {
    /// Cancel the turn (any thread holding a reference).
    pub fn cancel(&self) -> Result<()> {
        self.request.cancel()
    }
    /// Wait for the end and return the whole reply, or the turn's error.
    pub fn finish(self) -> Result<String> {
        self.request.wait(-1)?;
        self.request.take_reply()
    }
}
