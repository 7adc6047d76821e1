package parley;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Reference;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

/**
 * A loaded model file (parley_model): immutable, usable by any number of
 * threads at once. It must outlive its chat sessions and requests: close()
 * refuses ({@link Status#BUSY}) while any is open.
 */
public final class Model extends Handle {
  private Model(Pointer p) {
    super(p, Api.LIB::parley_model_free, null);
  }

  /** Load a model file (memory-mapped) onto the default device ("cpu"). */
  public static Model load(ParleyRuntime runtime, String path) {
    return load(runtime, path, null);
  }

  /** Load a model file onto {@code device} (null: "cpu"). */
  public static Model load(ParleyRuntime runtime, String path, String device) {
    try (Text.Arena arena = new Text.Arena()) {
      Api.ModelOptions o = new Api.ModelOptions();
      o.struct_size = o.size();
      Status.check(Api.LIB.parley_model_options_defaults(o));
      if (device != null) o.device = arena.cstr(device, "device");
      PointerByReference out = new PointerByReference();
      Status.check(Api.LIB.parley_model_load_file(runtime.ptr(), Text.cstr(path, "model path"), o, out));
      return new Model(out.getValue());
    } finally {
      Reference.reachabilityFence(runtime);
    }
  }

  /** Load a model from the bytes of a model file (copied: the array may change afterwards). */
  public static Model loadMemory(ParleyRuntime runtime, byte[] data) {
    try {
      PointerByReference out = new PointerByReference();
      Status.check(Api.LIB.parley_model_load_memory(runtime.ptr(), data, data.length, null, out));
      return new Model(out.getValue());
    } finally {
      Reference.reachabilityFence(runtime);
    }
  }

  /** The Hugging Face class name the model was converted from, e.g. "MarianMTModel". */
  public String architecture() {
    try {
      Api.ModelInfo info = new Api.ModelInfo();
      info.struct_size = info.size();
      Status.check(Api.LIB.parley_model_get_info(ptr(), info));
      return Text.borrowed(info.architecture);
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Verify one tensor's checksum now. Errors: NOT_FOUND, CHECKSUM. */
  public void verifyTensor(String name) {
    try {
      Status.check(Api.LIB.parley_model_verify_tensor(ptr(), Text.cstr(name, "tensor name")));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Token ids of {@code text} with the special tokens the tokenizer adds (BOS, EOS). */
  public int[] tokenize(String text) {
    final int addSpecial = 1; // PARLEY_TOKENIZE_ADD_SPECIAL
    byte[] b = Text.utf8(text);
    try {
      LongByReference n = new LongByReference();
      Status.check(Api.LIB.parley_tokenize_n(ptr(), b, b.length, addSpecial, null, null, 0, n));
      int[] ids = new int[Text.checkedLength(n.getValue())];
      Status.check(Api.LIB.parley_tokenize_n(ptr(), b, b.length, addSpecial, null, ids, ids.length, n));
      return ids;
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The text of {@code ids} (the target tokenizer of a translation model). */
  public String detokenize(int[] ids, boolean skipSpecialTokens) {
    try {
      PointerByReference out = new PointerByReference();
      Status.check(Api.LIB.parley_detokenize(ptr(), ids, ids.length, skipSpecialTokens ? 1 : 0, out));
      return Text.take(out.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Translate UTF-8 texts (an encoder-decoder model). */
  public TranslationResult translate(List<String> texts, TranslationOptions options) {
    return translate(texts, options, null);
  }

  /** Translate with streaming (see {@link TranslationListener}). */
  public TranslationResult translate(List<String> texts, TranslationOptions options, TranslationListener listener) {
    if (options == null) options = new TranslationOptions();
    AtomicReference<Throwable> thrown = new AtomicReference<>();
    Api.TranslationTextFn fn = listener == null ? null : new TranslationCallback(listener, thrown);
    try (Text.Arena arena = new Text.Arena()) {
      Api.GenerationOptions g = GenerationOptions.orDefaults(options.generation).toNative(this);
      Api.TranslationOptions o = options.toNative(arena, g);
      o.on_text = fn;
      Pointer[] t = arena.texts(texts);
      PointerByReference out = new PointerByReference();
      int st = Api.LIB.parley_translate_n(ptr(), t[0], t[1], texts.size(), o, out);
      Reference.reachabilityFence(g);
      Reference.reachabilityFence(o);
      Reference.reachabilityFence(fn);
      if (st != Status.OK) {
        ParleyException e = new ParleyException(st, Text.borrowed(Api.LIB.parley_last_error()));
        rethrow(thrown.get());
        throw e;
      }
      TranslationResult r = new TranslationResult(out.getValue());
      if (thrown.get() != null) {
        r.close();
        rethrow(thrown.get());
      }
      return r;
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Generate continuations of token prompts (a decoder-only model). */
  public GenerationResult generate(int[][] prompts, GenerationOptions options) {
    if (options == null) options = new GenerationOptions();
    try (Text.Arena arena = new Text.Arena()) {
      Api.GenerationOptions g = options.toNative(this);
      Pointer[] p = arena.ints(prompts);
      PointerByReference out = new PointerByReference();
      Status.check(Api.LIB.parley_generate(ptr(), p[0], p[1], prompts.length, g, out));
      return new GenerationResult(out.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Submit a translation to run in the background (parley_translate_submit). */
  public Request translateSubmit(List<String> texts, TranslationOptions options, RequestOptions requestOptions) {
    if (options == null) options = new TranslationOptions();
    if (requestOptions == null) requestOptions = new RequestOptions();
    try (Text.Arena arena = new Text.Arena()) {
      Api.GenerationOptions g = GenerationOptions.orDefaults(options.generation).toNative(this);
      Api.TranslationOptions o = options.toNative(arena, g);
      Pointer[] t = arena.texts(texts);
      PointerByReference out = new PointerByReference();
      // Parley copies the texts and options at submission.
      Status.check(Api.LIB.parley_translate_submit(ptr(), t[0], t[1], texts.size(), o, requestOptions.toNative(),
          out));
      Reference.reachabilityFence(g);
      return new Request(out.getValue(), this, Request.Kind.TRANSLATION);
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  static void rethrow(Throwable t) {
    if (t == null) return;
    if (t instanceof RuntimeException) throw (RuntimeException) t;
    if (t instanceof Error) throw (Error) t;
    throw new RuntimeException(t);
  }

  /** Calls the listener; an exception is kept for the caller and stops the translation. */
  private static final class TranslationCallback implements Api.TranslationTextFn {
    private final TranslationListener listener;
    private final AtomicReference<Throwable> thrown;

    TranslationCallback(TranslationListener listener, AtomicReference<Throwable> thrown) {
      this.listener = listener;
      this.thrown = thrown;
    }

    @Override
    public int invoke(Pointer userData, long textIndex, long hypothesis, Pointer text, long length, int isFinal) {
      if (thrown.get() != null) return 1;
      try {
        return listener.onText((int) textIndex, (int) hypothesis, Text.decode(text, length), isFinal != 0) ? 0 : 1;
      } catch (Throwable t) {
        thrown.compareAndSet(null, t);
        return 1;
      }
    }
  }
}
