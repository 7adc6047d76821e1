package parley;

/** Background request settings (parley_request_options). */
public final class RequestOptions {
  /** Milliseconds after submission at which the request stops with {@link Status#TIMEOUT} (0: none). */
  public long deadlineMs;
  /** Record per-token log-probabilities (in {@link Request#json}). */
  public boolean returnLogprobs;

  public RequestOptions deadlineMs(long v) {
    deadlineMs = v;
    return this;
  }

  public RequestOptions returnLogprobs(boolean v) {
    returnLogprobs = v;
    return this;
  }

  Api.RequestOptions toNative() {
    Api.RequestOptions o = new Api.RequestOptions();
    o.struct_size = o.size();
    Status.check(Api.LIB.parley_request_options_defaults(o));
    o.deadline_ms = deadlineMs;
    o.return_logprobs = returnLogprobs ? 1 : 0;
    return o;
  }
}
