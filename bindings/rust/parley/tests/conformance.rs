// The bindings' conformance cases (issue 14) through the safe crate:
// translate with n-best and attention, chat with streaming, cancel from
// another thread, every error status, 1,000 create/free cycles. Run by the
// ctest rust_binding (tests/rust), which sets the environment below.
use parley::{status, ChatOptions, ChatSession, GenerationOptions, Model, RequestOptions, Runtime, TranslationOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

// The transformers goldens the C and C++ suites use (tests/text_api/goldens.h).
const GOLDENS_H: &str = include_str!("../../../../tests/text_api/goldens.h");

// The strings of `static const char *const NAME[] = {...};` or `... NAME = "...";`
// in goldens.h (C string literals: octal escapes, \" and \\).
fn golden_strings(name: &str) -> Vec<String> {
    let start = GOLDENS_H.find(&format!(" {}", name)).unwrap_or_else(|| panic!("{} not in goldens.h", name));
    let rest = &GOLDENS_H[start..];
    let end = rest.find(";\n").expect("declaration end");
    let decl = rest[..end].as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < decl.len() {
        if decl[i] != b'"' {
            i += 1;
            continue;
        }
        let mut bytes = Vec::new();
        i += 1;
        while decl[i] != b'"' {
            if decl[i] == b'\\' {
                let c = decl[i + 1];
                if c.is_ascii_digit() {
                    let mut v = 0u32;
                    let mut k = 0;
                    while k < 3 && decl[i + 1 + k].is_ascii_digit() {
                        v = v * 8 + (decl[i + 1 + k] - b'0') as u32;
                        k += 1;
                    }
                    bytes.push(v as u8);
                    i += 1 + k;
                } else {
                    bytes.push(match c {
                        b'n' => b'\n',
                        b't' => b'\t',
                        other => other,
                    });
                    i += 2;
                }
            } else {
                bytes.push(decl[i]);
                i += 1;
            }
        }
        i += 1;
        out.push(String::from_utf8(bytes).expect("UTF-8 golden"));
    }
    out
}

fn golden_floats(name: &str) -> Vec<f32> {
    let start = GOLDENS_H.find(&format!(" {}", name)).expect("golden");
    let rest = &GOLDENS_H[start..];
    let open = rest.find('{').unwrap();
    let close = rest.find('}').unwrap();
    rest[open + 1..close].split(',').map(|v| v.trim().trim_end_matches('f').parse().unwrap()).collect()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{} is not set (run through ctest)", name))
}
fn data(name: &str) -> String {
    format!("{}/{}", env("PARLEY_TEST_DATA_DIR"), name)
}
// A tiny random-weight Llama (tests/parity; no tokenizer).
fn parity(name: &str) -> String {
    format!("{}/{}", env("PARLEY_PARITY_MODELS"), name)
}
fn demo(name: &str) -> String {
    format!("{}/{}", env("PARLEY_DEMO_MODELS"), name)
}
fn runtime(threads: i32) -> Runtime {
    let dir = env("PARLEY_PLUGIN_BUILD_DIR");
    Runtime::with_plugin_dirs(&[dir.as_str()], threads).expect("runtime")
}

fn greedy(tokens: usize) -> ChatOptions {
    ChatOptions {
        generation: GenerationOptions {
            max_new_tokens: Some(tokens),
            min_new_tokens: Some(tokens),
            do_sample: Some(false),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn translate_nbest_with_attention_matches_transformers() {
    let rt = runtime(0);
    let m = Model::load(&rt, &demo("opus-mt-de-en.parley")).unwrap();
    let texts = golden_strings("DE_EN_TEXTS");
    let nbest = golden_strings("DE_EN_NBEST2");
    let scores = golden_floats("DE_EN_NBEST2_SCORES");
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let o = TranslationOptions {
        generation: GenerationOptions { num_beams: Some(4), num_return_sequences: Some(2), ..Default::default() },
        return_attention: true,
        ..Default::default()
    };
    let r = m.translate(&refs, &o).unwrap();
    assert_eq!(r.len(), texts.len());
    for i in 0..texts.len() {
        assert_eq!(r.hypothesis_count(i).unwrap(), 2);
        let src = r.source_tokens(i).unwrap();
        assert_eq!(src, m.tokenize(&texts[i]).unwrap().as_slice());
        for h in 0..2 {
            assert_eq!(r.text(i, h).unwrap(), nbest[i * 2 + h]);
            assert!((r.score(i, h).unwrap() - scores[i * 2 + h]).abs() < 1e-3);
            assert!(!r.cut_by_length(i, h).unwrap()); // the goldens end on EOS well before max_length
            let a = r.attention(i, h).unwrap();
            assert_eq!((a.rows, a.cols), (r.target_tokens(i, h).unwrap().len(), src.len()));
            for row in 0..a.rows {
                let sum: f32 = (0..a.cols).map(|c| a.at(row, c)).sum();
                assert!((0..a.cols).all(|c| a.at(row, c) >= 0.0));
                assert!((sum - 1.0).abs() < 1e-4, "row {} sums to {}", row, sum);
            }
        }
    }
    assert_eq!(r.text(0, 2).unwrap_err().status(), status::NOT_FOUND);
    // The JSON document carries the same texts.
    let json = r.json(parley::JSON_NO_ATTENTION).unwrap();
    assert!(json.starts_with("{\"kind\":\"translation\""), "{}", &json[..40]);
    for t in &nbest {
        assert!(json.contains(&format!("\"text\":\"{}\"", t.replace('"', "\\\""))), "{} not in the JSON", t);
    }
    // Streaming: the final texts are the result's.
    let greedy_o = TranslationOptions { generation: GenerationOptions { num_beams: Some(1), ..Default::default() }, ..Default::default() };
    let mut finals = vec![String::new(); 2];
    let s = m
        .translate_streaming(&refs[3..5], &greedy_o, |text, _h, so_far, last| {
            if last {
                finals[text] = so_far.to_owned();
            }
            true
        })
        .unwrap();
    assert_eq!(finals, vec![s.text(0, 0).unwrap().to_owned(), s.text(1, 0).unwrap().to_owned()]);
}

#[test]
fn chat_streams_the_reply_transformers_gives() {
    let rt = runtime(0);
    let m = Model::load(&rt, &demo("support-llama.parley")).unwrap();
    let system = golden_strings("CHAT_SYSTEM").remove(0);
    let turns = golden_strings("CHAT_TURNS");
    let replies = golden_strings("CHAT_REPLIES");
    let max_new: usize = GOLDENS_H
        .split("#define CHAT_MAX_NEW_TOKENS ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("CHAT_MAX_NEW_TOKENS");
    let o = ChatOptions {
        generation: GenerationOptions { max_new_tokens: Some(max_new), do_sample: Some(false), ..Default::default() },
        ..Default::default()
    };
    let s = ChatSession::new(&m, Some(&system)).unwrap();
    s.append(parley::role::USER, &turns[0]).unwrap();
    let mut streamed = String::new();
    let reply = s
        .generate_streaming(&o, |piece| {
            streamed.push_str(piece);
            true
        })
        .unwrap();
    assert_eq!(reply, replies[0]);
    assert_eq!(streamed, reply);
    assert_eq!(s.message_count().unwrap(), 3);
    assert_eq!(s.message(2).unwrap(), (parley::role::ASSISTANT, reply.clone()));
    // The iterator form (a worker thread underneath) gives the same reply.
    s.remove_last().unwrap();
    let mut stream = s.stream(&o).unwrap();
    let pieces: Vec<String> = stream.by_ref().collect();
    assert!(pieces.len() >= 2);
    assert_eq!(pieces.concat(), replies[0]);
    assert_eq!(stream.finish().unwrap(), replies[0]);
    // A panic in the callback comes back out of generate_streaming.
    s.remove_last().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = s.generate_streaming(&o, |_| panic!("stop here"));
    }));
    assert!(caught.is_err());
}

#[test]
fn cancel_from_another_thread() {
    let rt = runtime(0);
    let m = Model::load(&rt, &demo("support-llama.parley")).unwrap();
    let s = ChatSession::new(&m, None).unwrap();
    s.append(parley::role::USER, "Hi").unwrap();
    let (streaming, cancelled) = (AtomicBool::new(false), AtomicBool::new(false));
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !streaming.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            s.cancel().unwrap();
            cancelled.store(true, Ordering::SeqCst);
        });
        s.generate_streaming(&greedy(48), |_| {
            streaming.store(true, Ordering::SeqCst);
            // Hold the turn until the cancel has landed (min_new_tokens: it cannot end first).
            while !cancelled.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            true
        })
    });
    assert_eq!(result.unwrap_err().status(), status::CANCELLED);
    assert_eq!(s.message_count().unwrap(), 1); // unchanged
    // A background request cancelled from another thread.
    let r = s.submit(&greedy(200), &RequestOptions::default()).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| r.cancel().unwrap());
    });
    assert!(r.wait(-1).unwrap());
    assert_eq!(r.status().unwrap().0, status::CANCELLED);
    assert_eq!(r.take_reply().unwrap_err().status(), status::CANCELLED);
    assert!(r.json(0).unwrap().contains("\"status\":\"PARLEY_ERROR_CANCELLED\""));
}

#[test]
fn every_error_status_is_an_err_with_its_message() {
    let rt = runtime(0);
    let tiny = Model::load(&rt, &parity("llama.parley")).unwrap();
    let llm = Model::load(&rt, &demo("support-llama.parley")).unwrap();
    let mt = Model::load(&rt, &demo("opus-mt-de-en.parley")).unwrap();
    let bytes = std::fs::read(data("tiny_decoder.parley")).unwrap();
    let mut got: BTreeMap<i32, String> = BTreeMap::new();
    let mut record = |want: i32, e: parley::Error| {
        assert_eq!(e.status(), want, "{}: {}", status_name_of(want), e);
        assert!(!e.message().is_empty());
        got.insert(want, e.message().to_owned());
    };
    record(status::INVALID_ARGUMENT, mt.translate(&["a\0b"], &TranslationOptions::default()).err().unwrap());
    let huge = GenerationOptions { max_new_tokens: Some(8), num_beams: Some(1 << 29), ..Default::default() };
    record(status::OUT_OF_MEMORY, tiny.generate(&[&[1, 5, 9]], &huge).err().unwrap());
    record(status::IO, Model::load(&rt, &data("no_such_model.parley")).err().unwrap());
    record(status::INVALID_MODEL, Model::load_memory(&rt, &[0u8; 4096]).err().unwrap());
    // Format major 2 (bytes 8-9): the loader checks the version before the
    // preamble's checksum, so the stale checksum does not matter.
    let mut b = bytes.clone();
    b[8] = 2;
    b[9] = 0;
    record(status::UNSUPPORTED_VERSION, Model::load_memory(&rt, &b).err().unwrap());
    let mut b = bytes.clone();
    b[40] ^= 0x10;
    record(status::CHECKSUM, Model::load_memory(&rt, &b).err().unwrap());
    record(status::NOT_FOUND, tiny.verify_tensor("no.such.tensor").err().unwrap());
    record(status::PLUGIN, rt.load_plugin(&format!("{}/libparley_cpu.so", env("PARLEY_PLUGIN_BUILD_DIR"))).err().unwrap());
    {
        let rt2 = runtime(0);
        rt2.load_plugin(&env("PARLEY_FAKEGPU_PLUGIN")).unwrap();
        record(status::DEVICE, Model::load_on(&rt2, &data("tiny_decoder.parley"), Some("fakegpu")).err().unwrap());
    }
    record(status::UNSUPPORTED, llm.translate(&["Hallo!"], &TranslationOptions::default()).err().unwrap());
    {
        let s = ChatSession::new(&llm, None).unwrap();
        s.append(parley::role::USER, "Hi").unwrap();
        let r = s.submit(&greedy(200), &RequestOptions::default()).unwrap();
        r.cancel().unwrap();
        r.wait(-1).unwrap();
        record(status::CANCELLED, r.take_reply().unwrap_err());
    }
    {
        let s = ChatSession::new(&llm, None).unwrap();
        s.append(parley::role::USER, "Hi").unwrap();
        let busy = Mutex::new(None);
        s.generate_streaming(&greedy(2), |_| {
            *busy.lock().unwrap() = s.message_count().err();
            false
        })
        .unwrap();
        record(status::BUSY, busy.into_inner().unwrap().expect("a call from the callback is refused"));
    }
    {
        let s = ChatSession::new(&llm, None).unwrap();
        s.append(parley::role::USER, "Hi").unwrap();
        let r = s.submit(&greedy(200), &RequestOptions { deadline_ms: 1, ..Default::default() }).unwrap();
        r.wait(-1).unwrap();
        record(status::TIMEOUT, r.take_reply().unwrap_err());
    }
    // Every code but INTERNAL (a bug in Parley; no input reaches it).
    for code in 1..=status::TIMEOUT {
        if code == status::INTERNAL {
            continue;
        }
        assert!(got.contains_key(&code), "{} not produced", status_name_of(code));
    }
}

fn status_name_of(code: i32) -> &'static str {
    parley::status_name(code)
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn mappings_of(path: &str) -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().filter(|l| l.ends_with(path)).count()
}

#[test]
fn thousand_create_free_cycles_leave_nothing_behind() {
    let decoder = parity("llama_bias.parley");
    let keep = runtime(1);
    let mt = Model::load(&keep, &demo("opus-mt-de-en.parley")).unwrap();
    let chat_model = Model::load(&keep, &demo("support-llama.parley")).unwrap();
    let to = TranslationOptions {
        generation: GenerationOptions { num_beams: Some(1), max_new_tokens: Some(8), ..Default::default() },
        ..Default::default()
    };
    let g = GenerationOptions { max_new_tokens: Some(4), do_sample: Some(false), ..Default::default() };
    let co = greedy(4);
    // Start what the shared models start at first use (their serving engine)
    // before counting.
    let warm = ChatSession::new(&chat_model, Some("sys")).unwrap();
    warm.append(parley::role::USER, "hello").unwrap();
    warm.generate(&co).unwrap();
    drop(warm);
    mt.translate(&["Hallo!"], &to).unwrap();
    let (threads_before, fds_before) = (count_entries("/proc/self/task"), count_entries("/proc/self/fd"));
    // Every cycle creates and frees a runtime, a model, a generation result
    // and a chat session; every 10th also runs a chat turn and a translation
    // on the shared demo models (the costly part).
    let mut first: Option<(Vec<i32>, String, String)> = None;
    for cycle in 0..1000 {
        let rt = runtime(1);
        let llm = Model::load(&rt, &decoder).unwrap();
        let gr = llm.generate(&[&[1, 7, 9]], &g).unwrap();
        // Sessions of the shared chat model (the tiny Llama has no tokenizer).
        let chat = ChatSession::new(&chat_model, Some("sys")).unwrap();
        chat.append(parley::role::USER, "hello").unwrap();
        assert_eq!(chat.message_count().unwrap(), 2);
        let (mut reply, mut json) = match &first {
            Some(f) => (f.1.clone(), f.2.clone()),
            None => (String::new(), String::new()),
        };
        if cycle % 10 == 0 {
            reply = chat.generate_streaming(&co, |_| true).unwrap();
            json = mt.translate(&["Hallo!"], &to).unwrap().json(0).unwrap();
        }
        let now = (gr.tokens(0, 0).unwrap().to_vec(), reply, json);
        match &first {
            None => {
                assert!(!now.1.is_empty());
                assert_eq!(mappings_of(&decoder), 1); // the check below can see a model left mapped
                first = Some(now);
            }
            Some(f) => assert!(*f == now, "cycle {} differs from the first", cycle),
        }
    }
    // Every runtime's threads, every model's mapping, every file is gone.
    assert_eq!(count_entries("/proc/self/task"), threads_before);
    assert_eq!(count_entries("/proc/self/fd"), fds_before);
    assert_eq!(mappings_of(&decoder), 0);
}
