package parley;

import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import java.io.IOException;
import java.nio.charset.Charset;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;

/**
 * The bindings' conformance cases (issue 14) through the Java binding, the
 * same as tests/cpp/test_parley_hpp.cpp and
 * bindings/rust/parley/tests/conformance.rs: translate with n-best and
 * attention, chat with streaming, cancel from another thread, every error
 * status, 1,000 create/free cycles; and UTF-8 text under a C-locale JVM.
 * Run by the ctest java_binding (tests/java/CMakeLists.txt), which sets the
 * environment and runs the JVM under LC_ALL=C. A plain runner: every failed
 * check is printed and counted; the exit status is 1 if any failed.
 */
public final class ConformanceTest {
  private static int failures = 0;
  private static int checks = 0;
  private static String current = "";

  /** A failed requirement: ends the current case. */
  private static final class Failed extends RuntimeException {
    private static final long serialVersionUID = 1L;

    Failed(String m) {
      super(m);
    }
  }

  private static void check(boolean ok, String what) {
    ++checks;
    if (!ok) {
      ++failures;
      System.out.println("  FAIL [" + current + "] " + what);
    }
  }

  private static void require(boolean ok, String what) {
    check(ok, what);
    if (!ok) throw new Failed(what);
  }

  private static void checkEq(Object got, Object want, String what) {
    boolean ok = got == null ? want == null : got.equals(want);
    check(ok, what + ": got <" + got + ">, want <" + want + ">");
  }

  /** The status of the ParleyException f throws (OK if none); its detail into message[0]. */
  private static int statusOf(Runnable f, String[] message) {
    try {
      f.run();
    } catch (ParleyException e) {
      if (message != null) message[0] = e.detail();
      return e.status();
    }
    return Status.OK;
  }

  private static int statusOf(Runnable f) {
    return statusOf(f, null);
  }

  // ------------------------------------------------------------ environment

  private static String env(String name) {
    String v = System.getenv(name);
    if (v == null || v.isEmpty()) throw new Failed(name + " is not set (run through ctest)");
    return v;
  }

  private static String data(String name) {
    return env("PARLEY_TEST_DATA_DIR") + "/" + name;
  }

  private static String parity(String name) {
    return env("PARLEY_PARITY_MODELS") + "/" + name;
  }

  private static String demo(String name) {
    return env("PARLEY_DEMO_MODELS") + "/" + name;
  }

  private static ParleyRuntime runtime(int threads) {
    return ParleyRuntime.create(List.of(env("PARLEY_PLUGIN_BUILD_DIR")), threads);
  }

  // ------------------------------------------------------------ goldens

  // The transformers goldens the C, C++ and Rust suites use (tests/text_api/goldens.h).
  private static String goldensH;

  /** The strings of `static const char *const NAME[] = {...};` or `NAME = "...";` (C literals). */
  private static List<String> goldenStrings(String name) {
    int start = goldensH.indexOf(" " + name);
    require(start >= 0, name + " in goldens.h");
    String decl = goldensH.substring(start, goldensH.indexOf(";\n", start));
    byte[] d = decl.getBytes(StandardCharsets.ISO_8859_1); // goldens.h is ASCII (octal escapes)
    List<String> out = new ArrayList<>();
    int i = 0;
    while (i < d.length) {
      if (d[i] != '"') {
        ++i;
        continue;
      }
      java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
      ++i;
      while (d[i] != '"') {
        if (d[i] == '\\') {
          byte c = d[i + 1];
          if (c >= '0' && c <= '7') {
            int v = 0;
            int k = 0;
            while (k < 3 && d[i + 1 + k] >= '0' && d[i + 1 + k] <= '7') {
              v = v * 8 + (d[i + 1 + k] - '0');
              ++k;
            }
            b.write(v);
            i += 1 + k;
          } else {
            b.write(c == 'n' ? '\n' : c == 't' ? '\t' : c);
            i += 2;
          }
        } else {
          b.write(d[i]);
          ++i;
        }
      }
      ++i;
      out.add(new String(b.toByteArray(), StandardCharsets.UTF_8));
    }
    return out;
  }

  private static float[] goldenFloats(String name) {
    int start = goldensH.indexOf(" " + name);
    require(start >= 0, name + " in goldens.h");
    String body = goldensH.substring(goldensH.indexOf('{', start) + 1, goldensH.indexOf('}', start));
    String[] parts = body.split(",");
    float[] out = new float[parts.length];
    for (int i = 0; i < parts.length; ++i) out[i] = Float.parseFloat(parts[i].trim().replaceAll("f$", ""));
    return out;
  }

  private static int goldenDefine(String name) {
    int start = goldensH.indexOf("#define " + name + " ");
    require(start >= 0, name + " in goldens.h");
    return Integer.parseInt(goldensH.substring(start + name.length() + 9).split("\\s+")[0]);
  }

  // ------------------------------------------------------------ shared models

  private static ParleyRuntime rt;
  private static Model deEn;
  private static Model enDe;
  private static Model llm;
  private static Model tiny;

  private static GenerationOptions greedy(long tokens) {
    return new GenerationOptions().maxNewTokens(tokens).minNewTokens(tokens).doSample(false);
  }

  private static ChatOptions longReply(long tokens) {
    return new ChatOptions().generation(greedy(tokens));
  }

  // ------------------------------------------------------------ cases

  /** The JNA mirrors have the sizes the library's exported _init functions write, and read its defaults back. */
  static void structLayoutsMatchTheLibrary() {
    Map<String, Integer> mine = new TreeMap<>();
    mine.put("runtime", new Api.RuntimeOptions().size());
    mine.put("model", new Api.ModelOptions().size());
    mine.put("generation", new Api.GenerationOptions().size());
    mine.put("translation", new Api.TranslationOptions().size());
    mine.put("chat", new Api.ChatOptions().size());
    mine.put("request", new Api.RequestOptions().size());
    for (Map.Entry<String, Integer> e : mine.entrySet()) {
      try (Memory m = new Memory(4096)) {
        m.clear();
        int st;
        switch (e.getKey()) {
          case "runtime": st = Api.LIB.parley_runtime_options_init(m); break;
          case "model": st = Api.LIB.parley_model_options_init(m); break;
          case "generation": st = Api.LIB.parley_generation_options_init(null, m); break;
          case "translation": st = Api.LIB.parley_translation_options_init(m); break;
          case "chat": st = Api.LIB.parley_chat_options_init(m); break;
          default: st = Api.LIB.parley_request_options_init(m); break;
        }
        checkEq(st, Status.OK, e.getKey() + " init");
        checkEq((int) m.getLong(0), e.getValue(),
            "sizeof parley_" + e.getKey() + "_options (the library's) vs the mirror");
      }
    }
    checkEq(new Api.ModelInfo().size(), 88, "sizeof parley_model_info (x86-64 and AArch64 LP64)");
    // Fields past padding read back the documented defaults.
    Api.RuntimeOptions r = new Api.RuntimeOptions();
    r.struct_size = r.size();
    Status.check(Api.LIB.parley_runtime_options_defaults(r));
    checkEq(r.plugin_sources, 7, "runtime plugin_sources = PARLEY_PLUGINS_DEFAULT");
    checkEq(r.min_severity, 2, "runtime min_severity = WARNING");
    Api.ModelOptions mo = new Api.ModelOptions();
    mo.struct_size = mo.size();
    Status.check(Api.LIB.parley_model_options_defaults(mo));
    checkEq(mo.verify_checksums, 1, "verify_checksums");
    checkEq(mo.serving_engine, 1, "serving_engine");
    checkEq(mo.kv_block_size, 16, "kv_block_size");
    checkEq(mo.max_batch_sequences, 256, "max_batch_sequences");
    checkEq(mo.max_batch_tokens, 512, "max_batch_tokens");
    checkEq(mo.prefill_chunk_tokens, 256, "prefill_chunk_tokens");
    checkEq(mo.admission_timeout_ms, 60000, "admission_timeout_ms");
    Api.GenerationOptions g = new Api.GenerationOptions();
    g.struct_size = g.size();
    Status.check(Api.LIB.parley_generation_options_defaults(null, g));
    checkEq(g.num_beams, 1L, "num_beams");
    checkEq(g.num_return_sequences, 1L, "num_return_sequences");
    checkEq(g.top_k, 50L, "top_k (transformers' default)");
    checkEq(g.top_p, 1.0f, "top_p");
    checkEq(g.temperature, 1.0f, "temperature");
    checkEq(g.repetition_penalty, 1.0f, "repetition_penalty");
    checkEq(g.length_penalty, 1.0f, "length_penalty");
    checkEq(g.num_alternatives, 0L, "num_alternatives");
  }

  static void translateNBestWithAttentionMatchesTransformers() {
    List<String> texts = goldenStrings("DE_EN_TEXTS");
    List<String> nbest = goldenStrings("DE_EN_NBEST2");
    float[] scores = goldenFloats("DE_EN_NBEST2_SCORES");
    TranslationOptions o = new TranslationOptions()
        .generation(new GenerationOptions().numBeams(4).numReturnSequences(2)).returnAttention(true);
    try (TranslationResult r = deEn.translate(texts, o)) {
      require(r.size() == texts.size(), "one result per text");
      for (int i = 0; i < texts.size(); ++i) {
        require(r.hypothesisCount(i) == 2, "two hypotheses");
        checkEq(r.errorStatus(i), Status.OK, "text " + i + " status");
        int[] src = r.sourceTokens(i);
        check(Arrays.equals(src, deEn.tokenize(texts.get(i))), "source tokens of text " + i + " are the tokenizer's");
        for (int h = 0; h < 2; ++h) {
          checkEq(r.text(i, h), nbest.get(i * 2 + h), "text " + i + " hypothesis " + h);
          check(Math.abs(r.score(i, h) - scores[i * 2 + h]) < 1e-3f, "score " + i + "/" + h + ": " + r.score(i, h)
              + " vs " + scores[i * 2 + h]);
          check(!r.cutByLength(i, h), "the goldens end on EOS well before max_length");
          int[] tgt = r.targetTokens(i, h);
          Attention a = r.attention(i, h);
          require(a.rows() == tgt.length && a.cols() == src.length, "attention is [target x source]");
          for (int row = 0; row < a.rows(); ++row) { // each row is a distribution over the source
            float sum = 0;
            boolean nonNegative = true;
            for (int col = 0; col < a.cols(); ++col) {
              nonNegative &= a.at(row, col) >= 0;
              sum += a.at(row, col);
            }
            check(nonNegative && Math.abs(sum - 1.0f) < 1e-4f, "attention row " + row + " sums to " + sum);
          }
        }
      }
      checkEq(statusOf(() -> r.text(texts.size(), 0)), Status.NOT_FOUND, "text index past the end");
      checkEq(statusOf(() -> r.text(0, 2)), Status.NOT_FOUND, "hypothesis index past the end");
      // The JSON document carries the same texts (UTF-8 decoded exactly: "Saönd", "€").
      String json = r.json(Json.NO_ATTENTION);
      check(json.startsWith("{\"kind\":\"translation\""), "JSON starts with its kind: " + json.substring(0, 40));
      for (String t : nbest) {
        check(json.contains("\"text\":\"" + t.replace("\"", "\\\"") + "\""), t + " in the JSON");
      }
      check(!json.contains("\"attention\""), "NO_ATTENTION leaves attention out");
      checkEq(statusOf(() -> r.json(4)), Status.INVALID_ARGUMENT, "unknown JSON flag");
    }
    // Without returnAttention there is none.
    try (TranslationResult plain = deEn.translate(List.of(texts.get(0)), null)) {
      checkEq(plain.text(0), goldenStrings("DE_EN_BEST").get(0), "default translation");
      checkEq(statusOf(() -> plain.attention(0, 0)), Status.NOT_FOUND, "no attention unless asked");
    }
  }

  static void translateStreamsFinalTextsAndRethrowsListenerExceptions() {
    List<String> all = goldenStrings("DE_EN_TEXTS");
    List<String> texts = List.of(all.get(3), all.get(4));
    TranslationOptions o = new TranslationOptions().generation(new GenerationOptions().numBeams(1));
    String[] finals = new String[texts.size()];
    AtomicInteger calls = new AtomicInteger();
    try (TranslationResult r = deEn.translate(texts, o, (text, hypothesis, soFar, isFinal) -> {
      check(hypothesis == 0, "greedy: one hypothesis");
      calls.incrementAndGet();
      if (isFinal) finals[text] = soFar;
      return true;
    })) {
      for (int i = 0; i < texts.size(); ++i) checkEq(finals[i], r.text(i), "final streamed text " + i);
      check(calls.get() > texts.size(), "greedy decoding streams before the final texts (" + calls.get() + " calls)");
    }
    final class Stop extends RuntimeException {
      private static final long serialVersionUID = 1L;
    }
    boolean thrown = false;
    try {
      deEn.translate(texts, o, (t, h, s, f) -> {
        throw new Stop();
      }).close();
    } catch (Stop e) {
      thrown = true;
    }
    check(thrown, "an exception in the listener comes out of translate");
  }

  static void translateSubmitRunsInTheBackground() {
    String text = goldenStrings("DE_EN_TEXTS").get(3);
    try (Request r = deEn.translateSubmit(List.of(text), null, null)) {
      check(r.await(-1), "done");
      check(r.poll(), "poll after await");
      checkEq(r.status(), Status.OK, "status");
      checkEq(r.statusMessage(), "", "no message");
      String json = r.json(Json.NO_TOKENS);
      check(json.contains("\"request\":\"translation\"") && json.contains(goldenStrings("DE_EN_BEST").get(3)),
          "request JSON: " + json);
      checkEq(statusOf(r::takeReply), Status.INVALID_ARGUMENT, "take_reply of a translation");
      try (TranslationResult t = r.takeTranslation()) {
        checkEq(t.text(0), goldenStrings("DE_EN_BEST").get(3), "the translation");
      }
      checkEq(statusOf(() -> r.takeTranslation().close()), Status.NOT_FOUND, "a second take");
      checkEq(statusOf(() -> deEn.close()), Status.BUSY, "a model with an open request refuses to close");
    }
  }

  static void chatStreamsTheReplyTransformersGives() {
    String system = goldenStrings("CHAT_SYSTEM").get(0);
    List<String> turns = goldenStrings("CHAT_TURNS");
    List<String> replies = goldenStrings("CHAT_REPLIES");
    ChatOptions o = new ChatOptions()
        .generation(new GenerationOptions().maxNewTokens(goldenDefine("CHAT_MAX_NEW_TOKENS")).doSample(false));
    try (ChatSession s = ChatSession.create(llm, system)) {
      s.append(Role.USER, turns.get(0));
      StringBuilder streamed = new StringBuilder();
      AtomicInteger pieces = new AtomicInteger();
      String reply = s.generate(o, piece -> {
        streamed.append(piece);
        pieces.incrementAndGet();
        return true;
      });
      checkEq(reply, replies.get(0), "the reply transformers gives");
      checkEq(streamed.toString(), reply, "the streamed pieces make the reply");
      check(pieces.get() >= 2, "streamed in pieces (" + pieces.get() + ")");
      require(s.messageCount() == 3, "system, user, assistant");
      checkEq(s.message(2), new ChatSession.Message(Role.ASSISTANT, reply), "the reply is in the conversation");
      checkEq(s.message(0).content(), system, "the system prompt (with its €) reads back exactly");

      // Returning false ends the reply there (not an error).
      s.removeLast();
      AtomicReference<String> first = new AtomicReference<>();
      String cut = s.generate(o, piece -> {
        first.set(piece);
        return false;
      });
      checkEq(cut, first.get(), "the reply ends with the first piece");
      check(replies.get(0).startsWith(cut), "the cut reply begins the full one");

      // An exception in the listener comes out of generate.
      s.removeLast();
      boolean thrown = false;
      try {
        s.generate(o, piece -> {
          throw new IllegalStateException("stop here");
        });
      } catch (IllegalStateException e) {
        thrown = "stop here".equals(e.getMessage());
      }
      check(thrown, "the listener's exception is rethrown");
      // A stop string ends the reply before it.
      s.removeLast();
      String stopped = s.generate(new ChatOptions().generation(o.generation).stopStrings(List.of("Standard")));
      checkEq(stopped, replies.get(0).substring(0, replies.get(0).indexOf("Standard")),
          "the reply up to the stop string");
      // A text with a NUL inside is refused, not cut.
      checkEq(statusOf(() -> s.append(Role.USER, "a\0b")), Status.INVALID_ARGUMENT, "NUL inside a message");
    }
  }

  static void chatCancelFromAnotherThread() throws InterruptedException {
    try (ChatSession s = ChatSession.create(llm, null)) {
      s.append(Role.USER, "Hi");
      AtomicBoolean streaming = new AtomicBoolean();
      AtomicBoolean cancelled = new AtomicBoolean();
      Thread canceller = new Thread(() -> {
        while (!streaming.get()) Thread.onSpinWait();
        s.cancel();
        cancelled.set(true);
      });
      canceller.start();
      AtomicInteger pieces = new AtomicInteger();
      String[] message = {""};
      int st = statusOf(() -> s.generate(longReply(48), piece -> {
        pieces.incrementAndGet();
        streaming.set(true);
        // Hold the turn until the other thread's cancel has landed (min_new_tokens: it cannot end first).
        while (!cancelled.get()) Thread.onSpinWait();
        return true;
      }), message);
      canceller.join();
      checkEq(st, Status.CANCELLED, "generate cancelled from another thread (" + message[0] + ")");
      check(pieces.get() >= 1, "it streamed before the cancel");
      checkEq(s.messageCount(), 1, "the conversation is unchanged");
      check(!s.generate(new ChatOptions().generation(new GenerationOptions().maxNewTokens(4).doSample(false)))
          .isEmpty(), "the session still works");
    }
    // A background request cancelled from another thread.
    try (ChatSession s = ChatSession.create(llm, goldenStrings("CHAT_SYSTEM").get(0))) {
      s.append(Role.USER, goldenStrings("CHAT_TURNS").get(0));
      try (Request r = s.submit(longReply(200), null)) {
        Thread t = new Thread(r::cancel);
        t.start();
        t.join();
        check(r.await(-1), "the request is done");
        checkEq(r.status(), Status.CANCELLED, "request status");
        checkEq(statusOf(r::takeReply), Status.CANCELLED, "take_reply gives the request's error");
        String json = r.json(Json.ALL);
        check(json.contains("\"request\":\"chat\"") && json.contains("\"status\":\"PARLEY_ERROR_CANCELLED\"")
            && json.contains("\"result\":null"), "request JSON: " + json);
        checkEq(statusOf(s::close), Status.BUSY, "a session with an open request refuses to close");
      }
      checkEq(s.messageCount(), 2, "the conversation is unchanged");
    }
  }

  static void everyErrorStatusIsAnExceptionWithItsMessage() throws IOException {
    byte[] bytes = Files.readAllBytes(Paths.get(data("tiny_decoder.parley")));
    require(bytes.length > 4096, "tiny_decoder.parley");
    Map<Integer, Runnable> cases = new TreeMap<>();
    cases.put(Status.INVALID_ARGUMENT, () -> deEn.translate(List.of("a\0b"), null).close());
    cases.put(Status.OUT_OF_MEMORY, () -> { // a KV cache that can never fit, refused before allocating
      tiny.generate(new int[][] {{1, 5, 9}}, new GenerationOptions().maxNewTokens(8).numBeams(1L << 29)).close();
    });
    cases.put(Status.IO, () -> Model.load(rt, data("no_such_model.parley")).close());
    cases.put(Status.INVALID_MODEL, () -> Model.loadMemory(rt, new byte[4096]).close());
    cases.put(Status.UNSUPPORTED_VERSION, () -> {
      // Format major 2 (bytes 8-9, little-endian): the loader checks the
      // version before the preamble's checksum, so the stale checksum does not matter.
      byte[] b = bytes.clone();
      b[8] = 2;
      b[9] = 0;
      Model.loadMemory(rt, b).close();
    });
    cases.put(Status.CHECKSUM, () -> {
      byte[] b = bytes.clone();
      b[40] ^= 0x10; // inside the checksummed preamble
      Model.loadMemory(rt, b).close();
    });
    cases.put(Status.NOT_FOUND, () -> tiny.verifyTensor("no.such.tensor"));
    cases.put(Status.PLUGIN, () -> rt.loadPlugin(env("PARLEY_PLUGIN_BUILD_DIR") + "/libparley_cpu.so"));
    cases.put(Status.DEVICE, () -> { // a device whose driver is missing (tests/runtime/bad_plugin.c, kind 8)
      try (ParleyRuntime rt2 = runtime(0)) {
        rt2.loadPlugin(env("PARLEY_FAKEGPU_PLUGIN"));
        Model.load(rt2, data("tiny_decoder.parley"), "fakegpu").close();
      }
    });
    cases.put(Status.UNSUPPORTED, () -> llm.translate(List.of("Hallo!"), null).close());
    cases.put(Status.CANCELLED, () -> {
      try (ChatSession s = ChatSession.create(llm, null)) {
        s.append(Role.USER, "Hi");
        try (Request r = s.submit(longReply(200), null)) {
          r.cancel();
          r.await(-1);
          r.takeReply();
        }
      }
    });
    cases.put(Status.BUSY, () -> { // the session called from its own streaming listener
      try (ChatSession s = ChatSession.create(llm, null)) {
        s.append(Role.USER, "Hi");
        s.generate(longReply(2), piece -> {
          s.messageCount(); // throws BUSY; generate rethrows it when it returns
          return true;
        });
      }
    });
    cases.put(Status.TIMEOUT, () -> { // a deadline far shorter than 200 tokens take
      try (ChatSession s = ChatSession.create(llm, null)) {
        s.append(Role.USER, "Hi");
        try (Request r = s.submit(longReply(200), new RequestOptions().deadlineMs(1))) {
          r.await(-1);
          r.takeReply();
        }
      }
    });
    for (Map.Entry<Integer, Runnable> c : cases.entrySet()) {
      String[] message = {""};
      int got = statusOf(c.getValue(), message);
      checkEq(Status.name(got), Status.name(c.getKey()), "status (" + message[0] + ")");
      check(!message[0].isEmpty(), Status.name(c.getKey()) + " has a message");
    }
    // Every code but INTERNAL (a bug in Parley; no input reaches it).
    for (int code = 1; code <= Status.TIMEOUT; ++code) {
      if (code != Status.INTERNAL) check(cases.containsKey(code), Status.name(code) + " is produced");
    }
    // The exception names its status and carries parley_last_error().
    try {
      tiny.verifyTensor("no.such.tensor");
      check(false, "no exception");
    } catch (ParleyException e) {
      checkEq(e.statusName(), "PARLEY_ERROR_NOT_FOUND", "statusName");
      check(e.detail().contains("no.such.tensor"), "the message names the tensor: " + e.detail());
      check(e.getMessage().startsWith("PARLEY_ERROR_NOT_FOUND: "), "getMessage: " + e.getMessage());
    }
    // A NUL in a path is refused, not cut.
    checkEq(statusOf(() -> Model.load(rt, data("tiny_decoder.parley") + "\0x").close()), Status.INVALID_ARGUMENT,
        "NUL in a path");
    // A closed handle is NULL: the C API's NULL check answers; closing twice is harmless.
    Model closed = Model.load(rt, parity("llama.parley"));
    checkEq(closed.architecture(), "LlamaForCausalLM", "architecture");
    closed.close();
    closed.close();
    checkEq(statusOf(closed::architecture), Status.INVALID_ARGUMENT, "a closed model");
    // A model with an open session refuses to close (the C API needs it to outlive the session).
    try (Model m = Model.load(rt, demo("support-llama.parley"))) {
      ChatSession s = ChatSession.create(m, null);
      checkEq(statusOf(m::close), Status.BUSY, "a model with an open session refuses to close");
      s.close();
    }
  }

  /** Text crosses as UTF-8 although JNA's default encoding in this JVM (LC_ALL=C) is US-ASCII. */
  static void utf8TextRoundTripsUnderTheCLocale() {
    if ("1".equals(System.getenv("PARLEY_JAVA_C_LOCALE"))) {
      // The conditions of the review's corruption: prove that this JVM has
      // them. JNA's default encoding follows the locale (native.encoding;
      // on Java 17 file.encoding too; Java 18+ keeps file.encoding UTF-8).
      String jna = Native.getDefaultStringEncoding();
      check(!Charset.forName(jna).equals(StandardCharsets.UTF_8), "JNA's default encoding is not UTF-8 (" + jna + ")");
      check("Öffnungszeiten".getBytes(Charset.forName(jna))[0] == '?', "JNA's default encoding really loses Ö");
    }
    String word = "Öffnungszeiten";
    String mixed = "Wie sind Ihre Öffnungszeiten? 367,90 € – Grüße, 日本語, 🙂";
    // Tokenize and decode (byte-level BPE: exact round trip).
    int[] ids = llm.tokenize(mixed);
    checkEq(llm.detokenize(ids, true), mixed, "tokenize/detokenize round trip");
    check(llm.tokenize(word).length > 1, "tokenized");
    // A chat message and the system prompt come back byte for byte.
    try (ChatSession s = ChatSession.create(llm, "System: " + word)) {
      s.append(Role.USER, mixed);
      checkEq(s.message(0).content(), "System: " + word, "system prompt");
      checkEq(s.message(1).content(), mixed, "user message");
      String reply = s.generate(new ChatOptions().generation(greedy(6)));
      checkEq(s.message(2).content(), reply, "reply");
    }
    // Translation: "Öffnungszeiten" in, the transformers text out; German out of en-de.
    List<String> de = goldenStrings("DE_EN_TEXTS");
    check(de.get(4).contains(word), "DE_EN_TEXTS[4] holds " + word);
    try (TranslationResult r = deEn.translate(List.of(de.get(4)), null)) {
      checkEq(r.text(0), goldenStrings("DE_EN_BEST").get(4), "translation of " + de.get(4));
      check(Arrays.equals(r.sourceTokens(0), deEn.tokenize(de.get(4))), "source tokens");
    }
    List<String> en = goldenStrings("EN_DE_TEXTS");
    List<String> best = goldenStrings("EN_DE_BEST");
    try (TranslationResult r = enDe.translate(en, null)) {
      for (int i = 0; i < en.size(); ++i) checkEq(r.text(i), best.get(i), "en-de text " + i);
    }
  }

  private static long countEntries(String dir) {
    try (Stream<Path> s = Files.list(Paths.get(dir))) {
      return s.count();
    } catch (IOException e) {
      return -1;
    }
  }

  /** Names of the process's threads (for a failure message). */
  private static List<String> threadNames() {
    List<String> out = new ArrayList<>();
    try (Stream<Path> s = Files.list(Paths.get("/proc/self/task"))) {
      s.forEach(p -> {
        try {
          out.add(Files.readString(p.resolve("comm")).trim());
        } catch (IOException e) {
          out.add("?");
        }
      });
    } catch (IOException e) {
      out.add("?");
    }
    out.sort(null);
    return out;
  }

  private static long mappingsOf(String path) {
    try (Stream<String> lines = Files.lines(Paths.get("/proc/self/maps"))) {
      return lines.filter(l -> l.endsWith(path)).count();
    } catch (IOException e) {
      return -1;
    }
  }

  static void thousandCreateFreeCyclesLeaveNothingBehind() throws InterruptedException {
    // Not llama.parley: the shared models keep that one mapped.
    String decoder = parity("llama_bias.parley");
    TranslationOptions to = new TranslationOptions().generation(new GenerationOptions().numBeams(1).maxNewTokens(8));
    GenerationOptions g = new GenerationOptions().maxNewTokens(4).doSample(false);
    ChatOptions co = longReply(4);
    // Start what the shared models start at first use (the chat model's
    // serving engine), and what the JVM starts at its first use of a code
    // path, before counting.
    for (int warm = 0; warm < 3; ++warm) {
      try (ChatSession s = ChatSession.create(llm, "sys")) {
        s.append(Role.USER, "hello");
        s.generate(co, piece -> true);
      }
      deEn.translate(List.of("Hallo!"), to).json(Json.ALL);
    }
    System.gc();
    Thread.sleep(200);
    long threadsBefore = countEntries("/proc/self/task");
    long fdsBefore = countEntries("/proc/self/fd");
    List<String> namesBefore = threadNames();
    long liveBefore = Handle.LIVE.get();
    long rssAt100 = 0;
    // Every cycle creates and frees a runtime, a model, a generation result
    // and a chat session; every 10th also runs a chat turn and a translation
    // on the shared demo models (the costly part).
    int[] firstTokens = null;
    String firstReply = "";
    String firstJson = "";
    for (int cycle = 0; cycle < 1000; ++cycle) {
      if (cycle == 100) rssAt100 = rssKb();
      try (ParleyRuntime r = runtime(1);
           Model m = Model.load(r, decoder);
           GenerationResult gr = m.generate(new int[][] {{1, 7, 9}}, g);
           ChatSession chat = ChatSession.create(llm, "sys")) {
        chat.append(Role.USER, "hello");
        require(chat.messageCount() == 2, "two messages");
        String reply = firstReply;
        String json = firstJson;
        if (cycle % 10 == 0) {
          reply = chat.generate(co, piece -> true);
          try (TranslationResult tr = deEn.translate(List.of("Hallo!"), to)) {
            json = tr.json(Json.ALL);
          }
        }
        int[] tokens = gr.tokens(0, 0);
        if (cycle == 0) {
          firstTokens = tokens;
          firstReply = reply;
          firstJson = json;
          check(!reply.isEmpty(), "a reply");
          checkEq(mappingsOf(decoder), 1L, "the model is mapped (the check below can see one left mapped)");
        } else if (!Arrays.equals(tokens, firstTokens) || !reply.equals(firstReply) || !json.equals(firstJson)) {
          require(false, "cycle " + cycle + " differs from the first");
        }
      }
    }
    // Every runtime's kernel threads, every model's mapping, every file is gone.
    System.gc();
    Thread.sleep(200);
    long threadsAfter = countEntries("/proc/self/task");
    check(threadsAfter == threadsBefore, "threads: " + threadsBefore + " before, " + threadsAfter
        + " after\n    before " + namesBefore + "\n    after  " + threadNames());
    checkEq(countEntries("/proc/self/fd"), fdsBefore, "open files");
    checkEq(mappingsOf(decoder), 0L, "mappings of the decoder");
    // Every handle the binding created went through its C _free function.
    checkEq(Handle.LIVE.get(), liveBefore, "handles the binding created and did not free");
    // The JVM runs with a fixed, pre-touched heap (tests/java/CMakeLists.txt),
    // so after 100 cycles (JIT and class loading done) RSS grows only by what
    // leaks. A model left loaded (its weights prepared: about twice the 31 kB
    // file) or a chat session's KV cache per cycle would add over 50 MB in
    // the 900 cycles after; 16 MB is far below that and far above the noise.
    long rssAfter = rssKb();
    System.out.println("  RSS " + rssAt100 + " kB after 100 cycles, " + rssAfter + " kB after 1000");
    check(rssAfter - rssAt100 < 16 * 1024, "RSS grew by " + (rssAfter - rssAt100) + " kB over 900 cycles");
  }

  /** A handle a program forgets to close is freed once unreachable (the Cleaner). */
  static void unclosedHandlesAreFreedByTheCleaner() throws InterruptedException {
    String decoder = parity("llama_bias.parley");
    long live = Handle.LIVE.get();
    forget(decoder);
    check(Handle.LIVE.get() >= live + 5, "five models open");
    long deadline = System.nanoTime() + 20_000_000_000L;
    while ((mappingsOf(decoder) != 0 || Handle.LIVE.get() != live) && System.nanoTime() < deadline) {
      System.gc();
      Thread.sleep(20);
    }
    checkEq(mappingsOf(decoder), 0L, "mappings of the forgotten models");
    checkEq(Handle.LIVE.get(), live, "live handles");
  }

  private static void forget(String decoder) {
    ParleyRuntime r = runtime(1);
    for (int i = 0; i < 5; ++i) {
      Model m = Model.load(r, decoder);
      m.generate(new int[][] {{1, 7, 9}}, new GenerationOptions().maxNewTokens(2)).tokens(0, 0);
    }
    checkEq(mappingsOf(decoder), 5L, "five models mapped");
  }

  private static long rssKb() {
    try (Stream<String> lines = Files.lines(Paths.get("/proc/self/status"))) {
      return lines.filter(l -> l.startsWith("VmRSS:")).map(l -> Long.parseLong(l.replaceAll("[^0-9]", "")))
          .findFirst().orElse(-1L);
    } catch (IOException e) {
      return -1;
    }
  }

  // ------------------------------------------------------------ runner

  private interface Case {
    void run() throws Exception;
  }

  private static void run(String name, Case c) {
    current = name;
    int before = failures;
    long t0 = System.nanoTime();
    try {
      c.run();
    } catch (Failed e) {
      // already counted
    } catch (Throwable t) {
      ++failures;
      System.out.println("  FAIL [" + name + "] unexpected " + t);
      t.printStackTrace(System.out);
    }
    System.out.printf("%s %s (%.1f s)%n", failures == before ? "ok  " : "FAIL", name, (System.nanoTime() - t0) / 1e9);
  }

  public static void main(String[] args) throws Exception {
    // Failure messages hold non-ASCII text: print them as UTF-8 whatever the locale.
    System.setOut(new java.io.PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true,
        StandardCharsets.UTF_8));
    goldensH = new String(Files.readAllBytes(Paths.get(env("PARLEY_GOLDENS_H"))), StandardCharsets.ISO_8859_1);
    System.out.println("Parley " + ParleyRuntime.version() + ", JVM default charset " + Charset.defaultCharset()
        + ", JNA default encoding " + Native.getDefaultStringEncoding());
    rt = runtime(0);
    deEn = Model.load(rt, demo("opus-mt-de-en.parley"));
    enDe = Model.load(rt, demo("opus-mt-en-de.parley"));
    llm = Model.load(rt, demo("support-llama.parley"));
    tiny = Model.load(rt, parity("llama.parley"));
    List<String> selected = Arrays.asList(args);
    Map<String, Case> cases = new java.util.LinkedHashMap<>();
    cases.put("structLayoutsMatchTheLibrary", ConformanceTest::structLayoutsMatchTheLibrary);
    cases.put("utf8TextRoundTripsUnderTheCLocale", ConformanceTest::utf8TextRoundTripsUnderTheCLocale);
    cases.put("translateNBestWithAttentionMatchesTransformers",
        ConformanceTest::translateNBestWithAttentionMatchesTransformers);
    cases.put("translateStreamsFinalTextsAndRethrowsListenerExceptions",
        ConformanceTest::translateStreamsFinalTextsAndRethrowsListenerExceptions);
    cases.put("translateSubmitRunsInTheBackground", ConformanceTest::translateSubmitRunsInTheBackground);
    cases.put("chatStreamsTheReplyTransformersGives", ConformanceTest::chatStreamsTheReplyTransformersGives);
    cases.put("chatCancelFromAnotherThread", ConformanceTest::chatCancelFromAnotherThread);
    cases.put("everyErrorStatusIsAnExceptionWithItsMessage",
        ConformanceTest::everyErrorStatusIsAnExceptionWithItsMessage);
    cases.put("thousandCreateFreeCyclesLeaveNothingBehind",
        ConformanceTest::thousandCreateFreeCyclesLeaveNothingBehind);
    cases.put("unclosedHandlesAreFreedByTheCleaner", ConformanceTest::unclosedHandlesAreFreedByTheCleaner);
    for (Map.Entry<String, Case> c : cases.entrySet()) {
      if (selected.isEmpty() || selected.contains(c.getKey())) run(c.getKey(), c.getValue());
    }
    tiny.close();
    llm.close();
    enDe.close();
    deEn.close();
    rt.close();
    System.out.println(checks + " checks, " + failures + " failed");
    System.exit(failures == 0 ? 0 : 1);
  }
}
