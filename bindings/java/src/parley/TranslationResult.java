package parley;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.FloatByReference;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Reference;

/**
 * Texts, scores and attention of one translation
 * (parley_translation_result). Read-only: any thread may read it. Indexes
 * out of range fail with {@link Status#NOT_FOUND}. {@link #json} gives the
 * whole result as one document (docs/results_json.md).
 */
public final class TranslationResult extends Handle {
  TranslationResult(Pointer p) {
    super(p, Api.LIB::parley_translation_result_free, null);
  }

  /** Number of texts. */
  public int size() {
    return countOf((self, n) -> Api.LIB.parley_translation_result_count(self, n));
  }

  public int hypothesisCount(int text) {
    return countOf((self, n) -> Api.LIB.parley_translation_result_hypothesis_count(self, text, n));
  }

  /** Hypothesis {@code hypothesis} (best first) of text {@code text}. */
  public String text(int text, int hypothesis) {
    try {
      PointerByReference p = new PointerByReference();
      Status.check(Api.LIB.parley_translation_result_text(ptr(), text, hypothesis, p, null));
      return Text.borrowed(p.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The best hypothesis of text {@code text}. */
  public String text(int text) {
    return text(text, 0);
  }

  public float score(int text, int hypothesis) {
    try {
      PointerByReference p = new PointerByReference();
      FloatByReference s = new FloatByReference();
      Status.check(Api.LIB.parley_translation_result_text(ptr(), text, hypothesis, p, s));
      return s.getValue();
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Whether the hypothesis used up max_new_tokens (or the model's positions), so it may be cut short. */
  public boolean cutByLength(int text, int hypothesis) {
    try {
      IntByReference cut = new IntByReference();
      Status.check(Api.LIB.parley_translation_result_cut_by_length(ptr(), text, hypothesis, cut));
      return cut.getValue() != 0;
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The source token ids as encoded. */
  public int[] sourceTokens(int text) {
    try {
      PointerByReference p = new PointerByReference();
      LongByReference n = new LongByReference();
      Status.check(Api.LIB.parley_translation_result_source_tokens(ptr(), text, p, n));
      return Text.ints(p.getValue(), n.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  public int[] targetTokens(int text, int hypothesis) {
    try {
      PointerByReference p = new PointerByReference();
      LongByReference n = new LongByReference();
      Status.check(Api.LIB.parley_translation_result_target_tokens(ptr(), text, hypothesis, p, n));
      return Text.ints(p.getValue(), n.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Source attention (TranslationOptions.returnAttention); NOT_FOUND when it was not asked for. */
  public Attention attention(int text, int hypothesis) {
    try {
      PointerByReference p = new PointerByReference();
      LongByReference rows = new LongByReference();
      LongByReference cols = new LongByReference();
      Status.check(Api.LIB.parley_translation_result_attention(ptr(), text, hypothesis, p, rows, cols));
      int r = Text.checkedLength(rows.getValue());
      int c = Text.checkedLength(cols.getValue());
      return new Attention(r, c, Text.floats(p.getValue(), (long) r * c));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Why text {@code text} has no hypotheses (per_text_errors): {@link Status#OK} when it has. */
  public int errorStatus(int text) {
    try {
      IntByReference st = new IntByReference();
      Status.check(Api.LIB.parley_translation_result_error(ptr(), text, st, null));
      return st.getValue();
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The message for {@link #errorStatus} ("" when OK). */
  public String errorMessage(int text) {
    try {
      IntByReference st = new IntByReference();
      PointerByReference m = new PointerByReference();
      Status.check(Api.LIB.parley_translation_result_error(ptr(), text, st, m));
      return Text.borrowed(m.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The whole result as JSON (docs/results_json.md); flags: {@link Json}. */
  public String json(int flags) {
    return textOf((self, p, n) -> Api.LIB.parley_translation_result_json(self, flags, p, n));
  }
}
