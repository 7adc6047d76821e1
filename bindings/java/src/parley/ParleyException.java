package parley;

/**
 * A failed Parley call: the parley_status it returned and the
 * parley_last_error() message of that call. {@link #getMessage()} is
 * "PARLEY_ERROR_...: message".
 */
public class ParleyException extends RuntimeException {
  private static final long serialVersionUID = 1L;
  private final int status;
  private final String detail;

  public ParleyException(int status, String detail) {
    super(Status.name(status) + ": " + detail);
    this.status = status;
    this.detail = detail;
  }

  /** A {@link Status} code. */
  public int status() {
    return status;
  }

  /** "PARLEY_ERROR_NOT_FOUND", ... */
  public String statusName() {
    return Status.name(status);
  }

  /** The library's message (parley_last_error()), without the status name. */
  public String detail() {
    return detail;
  }
}
