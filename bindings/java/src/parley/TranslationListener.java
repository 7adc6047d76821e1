package parley;

/**
 * Streaming of a translation (parley_translation_text_fn): {@code soFar} is
 * the whole text of hypothesis {@code hypothesis} of text {@code text} so far
 * (not a delta); greedy decoding calls it as tokens come and then once with
 * {@code isFinal}; beam search only with the final texts. Return false to
 * finish that hypothesis there (not an error). An exception stops the
 * translation and is rethrown by the translate call. It may run on a Parley
 * thread, not the caller's; the call waits for it.
 */
@FunctionalInterface
public interface TranslationListener {
  boolean onText(int text, int hypothesis, String soFar, boolean isFinal);
}
