package parley;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.FloatByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Reference;

/** Hypotheses of one generate call (parley_generation_result). Read-only. */
public final class GenerationResult extends Handle {
  GenerationResult(Pointer p) {
    super(p, Api.LIB::parley_result_free, null);
  }

  /** Number of prompts. */
  public int size() {
    return countOf((self, n) -> Api.LIB.parley_result_batch_size(self, n));
  }

  public int hypothesisCount(int item) {
    return countOf((self, n) -> Api.LIB.parley_result_hypothesis_count(self, item, n));
  }

  /** The generated ids of a hypothesis (EOS included when it ended on one). */
  public int[] tokens(int item, int hypothesis) {
    try {
      PointerByReference p = new PointerByReference();
      LongByReference n = new LongByReference();
      Status.check(Api.LIB.parley_result_hypothesis(ptr(), item, hypothesis, p, n, null));
      return Text.ints(p.getValue(), n.getValue());
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  public float score(int item, int hypothesis) {
    try {
      PointerByReference p = new PointerByReference();
      LongByReference n = new LongByReference();
      FloatByReference s = new FloatByReference();
      Status.check(Api.LIB.parley_result_hypothesis(ptr(), item, hypothesis, p, n, s));
      return s.getValue();
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The whole result as JSON (docs/results_json.md); flags: {@link Json}. */
  public String json(int flags) {
    return textOf((self, p, n) -> Api.LIB.parley_result_json(self, flags, p, n));
  }
}
