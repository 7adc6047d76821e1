package parley;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Reference;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;

/**
 * A conversation with a decoder-only model (parley_chat_session). One call
 * at a time: a second call while one runs (from the streaming listener, or
 * another thread) fails with {@link Status#BUSY} and changes nothing; only
 * {@link #cancel()} may be called from any thread at any time. The model
 * stays open while the session is.
 */
public final class ChatSession extends Handle {
  /** One message of the conversation. */
  public record Message(int role, String content) {}

  private final Model model;
  private final AtomicInteger calls = new AtomicInteger();

  private ChatSession(Pointer p, Model model) {
    super(p, Api.LIB::parley_chat_session_free, model);
    this.model = model;
  }

  /** A session of {@code model}; {@code systemPrompt} may be null (no system message). */
  public static ChatSession create(Model model, String systemPrompt) {
    try {
      byte[] sys = systemPrompt == null ? null : Text.utf8(systemPrompt);
      PointerByReference out = new PointerByReference();
      Status.check(Api.LIB.parley_chat_session_create_n(model.ptr(), sys, sys == null ? 0 : sys.length, out));
      return new ChatSession(out.getValue(), model);
    } finally {
      Reference.reachabilityFence(model);
    }
  }

  /** Append a message ({@link Role}); a NUL inside the text is refused (INVALID_ARGUMENT). */
  public void append(int role, String content) {
    byte[] b = Text.utf8(content);
    try {
      Status.check(Api.LIB.parley_chat_append_n(ptr(), role, b, b.length));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Generate the assistant's reply, append it to the conversation and return it. */
  public String generate(ChatOptions options) {
    return generate(options, null);
  }

  /**
   * As {@link #generate(ChatOptions)}, streaming the reply's pieces to
   * {@code listener}. Errors: CANCELLED ({@link #cancel()}; the conversation
   * is unchanged), BUSY, and those of the model.
   */
  public String generate(ChatOptions options, TextListener listener) {
    if (options == null) options = new ChatOptions();
    AtomicReference<Throwable> thrown = new AtomicReference<>();
    // A strong reference for the whole call: JNA keeps only a weak one.
    Api.TextFn fn = listener == null ? null : new TextCallback(listener, thrown);
    calls.incrementAndGet();
    try (Text.Arena arena = new Text.Arena()) {
      Api.GenerationOptions g = GenerationOptions.orDefaults(options.generation).toNative(model);
      Api.ChatOptions o = options.toNative(arena, g);
      o.on_text = fn;
      PointerByReference reply = new PointerByReference();
      int st = Api.LIB.parley_chat_generate(ptr(), o, reply);
      Reference.reachabilityFence(g);
      Reference.reachabilityFence(o);
      Reference.reachabilityFence(fn);
      if (st != Status.OK) {
        ParleyException e = new ParleyException(st, Text.borrowed(Api.LIB.parley_last_error()));
        Model.rethrow(thrown.get());
        throw e;
      }
      String text = Text.take(reply.getValue());
      Model.rethrow(thrown.get());
      return text;
    } finally {
      calls.decrementAndGet();
      Reference.reachabilityFence(this);
    }
  }

  /** Ask a running generate to stop (any thread; it then fails with CANCELLED). */
  public void cancel() {
    try {
      Status.check(Api.LIB.parley_chat_cancel(ptr()));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Drop every message after the system prompt. */
  public void reset() {
    try {
      Status.check(Api.LIB.parley_chat_reset(ptr()));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Drop the last message. Errors: NOT_FOUND. */
  public void removeLast() {
    try {
      Status.check(Api.LIB.parley_chat_remove_last(ptr()));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  public int messageCount() {
    return countOf((self, n) -> Api.LIB.parley_chat_message_count(self, n));
  }

  /** Message {@code index} (0 is the system prompt when there is one). */
  public Message message(int index) {
    try {
      IntByReference role = new IntByReference();
      PointerByReference content = new PointerByReference();
      Status.check(Api.LIB.parley_chat_message(ptr(), index, role, content));
      return new Message(role.getValue(), Text.borrowed(content.getValue()));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /**
   * Run the next reply in the background (parley_chat_submit): the session
   * is busy until the request finishes, and stays open while the request is.
   */
  public Request submit(ChatOptions options, RequestOptions requestOptions) {
    if (options == null) options = new ChatOptions();
    if (requestOptions == null) requestOptions = new RequestOptions();
    try (Text.Arena arena = new Text.Arena()) {
      Api.GenerationOptions g = GenerationOptions.orDefaults(options.generation).toNative(model);
      Api.ChatOptions o = options.toNative(arena, g);
      PointerByReference out = new PointerByReference();
      // Parley copies the options (and stop strings) at submission.
      Status.check(Api.LIB.parley_chat_submit(ptr(), o, requestOptions.toNative(), out));
      Reference.reachabilityFence(g);
      return new Request(out.getValue(), this, Request.Kind.CHAT);
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Free the session; BUSY while a generate call of it runs, or a request of it is open. */
  @Override
  public void close() {
    if (calls.get() > 0) {
      throw new ParleyException(Status.BUSY, "the chat session is generating: close it after that call returns");
    }
    super.close();
  }

  private static final class TextCallback implements Api.TextFn {
    private final TextListener listener;
    private final AtomicReference<Throwable> thrown;

    TextCallback(TextListener listener, AtomicReference<Throwable> thrown) {
      this.listener = listener;
      this.thrown = thrown;
    }

    @Override
    public int invoke(Pointer userData, Pointer text, long length) {
      if (thrown.get() != null) return 1;
      try {
        return listener.onText(Text.decode(text, length)) ? 0 : 1;
      } catch (Throwable t) {
        thrown.compareAndSet(null, t);
        return 1;
      }
    }
  }
}
