package parley;

/** Flags of the json() methods (parley_json_flags, docs/results_json.md); OR them. */
public final class Json {
  private Json() {}

  /** Everything the result holds. */
  public static final int ALL = 0;
  /** Leave out token ids. */
  public static final int NO_TOKENS = 1;
  /** Leave out attention matrices. */
  public static final int NO_ATTENTION = 2;
}
