package parley;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Reference;

/**
 * A chat turn or translation running in the background (parley_request).
 * Every method may be called from any thread, also at once, except close
 * (which cancels an unfinished request and waits for it).
 */
public final class Request extends Handle {
  enum Kind { CHAT, TRANSLATION }

  private final Kind kind;

  Request(Pointer p, Handle owner, Kind kind) {
    super(p, Api.LIB::parley_request_free, owner);
    this.kind = kind;
  }

  /** Wait until it is done; {@code timeoutMs} < 0 waits for ever. True when done, false on timeout. */
  public boolean await(long timeoutMs) {
    try {
      int st = Api.LIB.parley_request_wait(ptr(), timeoutMs);
      if (st == Status.TIMEOUT) return false;
      Status.check(st);
      return true;
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Whether it is done (never blocks). */
  public boolean poll() {
    try {
      IntByReference done = new IntByReference();
      Status.check(Api.LIB.parley_request_poll(ptr(), done));
      return done.getValue() != 0;
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Ask it to stop (any thread, any time); it then ends with CANCELLED unless it finished first. */
  public void cancel() {
    try {
      Status.check(Api.LIB.parley_request_cancel(ptr()));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Its outcome: OK or the error the blocking call would have returned; BUSY while it runs. */
  public int status() {
    try {
      IntByReference st = new IntByReference();
      Status.check(Api.LIB.parley_request_status(ptr(), st, null));
      return st.getValue();
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The message of {@link #status()} ("" for OK). */
  public String statusMessage() {
    try {
      IntByReference st = new IntByReference();
      PointerByReference m = new PointerByReference();
      Status.check(Api.LIB.parley_request_status(ptr(), st, m));
      return Text.borrowed(m.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** A chat request's reply; its own error if it failed (CANCELLED, TIMEOUT, ...); NOT_FOUND once taken. */
  public String takeReply() {
    try {
      PointerByReference p = new PointerByReference();
      Status.check(Api.LIB.parley_request_take_reply(ptr(), p));
      return Text.take(p.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** A translation request's result (the caller closes it). */
  public TranslationResult takeTranslation() {
    try {
      PointerByReference p = new PointerByReference();
      Status.check(Api.LIB.parley_request_take_translation_result(ptr(), p));
      return new TranslationResult(p.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The finished request as JSON (docs/results_json.md), without taking its result. */
  public String json(int flags) {
    return textOf((self, p, n) -> Api.LIB.parley_request_json(self, flags, p, n));
  }

  @Override
  public String toString() {
    return "Request(" + kind + ")";
  }
}
