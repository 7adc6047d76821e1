package parley;

/**
 * Streaming of a chat reply (parley_text_fn): each new piece, whole code
 * points only. Return false to end the reply there (not an error). An
 * exception ends the reply and is rethrown by the generate call (the
 * conversation then holds the reply up to there, as for false). It may run
 * on a Parley thread, not the caller's; the call waits for it.
 */
@FunctionalInterface
public interface TextListener {
  boolean onText(String piece);
}
