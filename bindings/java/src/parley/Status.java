package parley;

/** The status codes of parley.h (parley_status_code): what {@link ParleyException#status()} holds. */
public final class Status {
  private Status() {}

  public static final int OK = 0;
  public static final int INVALID_ARGUMENT = 1;
  public static final int OUT_OF_MEMORY = 2;
  public static final int IO = 3;
  public static final int INVALID_MODEL = 4;
  public static final int UNSUPPORTED_VERSION = 5;
  public static final int CHECKSUM = 6;
  public static final int NOT_FOUND = 7;
  public static final int PLUGIN = 8;
  public static final int DEVICE = 9;
  public static final int UNSUPPORTED = 10;
  public static final int INTERNAL = 11;
  public static final int CANCELLED = 12;
  public static final int BUSY = 13;
  public static final int TIMEOUT = 14;

  /** The library's static name of a status, e.g. "PARLEY_ERROR_NOT_FOUND" ("PARLEY_ERROR_UNKNOWN" if unknown). */
  public static String name(int status) {
    return Text.borrowed(Api.LIB.parley_status_name(status));
  }

  /** Throws the status with parley_last_error() of this thread unless it is OK. */
  static void check(int status) {
    if (status != OK) throw new ParleyException(status, Text.borrowed(Api.LIB.parley_last_error()));
  }
}
