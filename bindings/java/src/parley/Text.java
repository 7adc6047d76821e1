package parley;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * UTF-8 in and out, whatever the JVM's locale: Java strings are encoded with
 * {@link StandardCharsets#UTF_8} and Parley's bytes are decoded with it,
 * never with file.encoding or jna.encoding (a JVM under LC_ALL=C has
 * US-ASCII there, which turned "Öffnungszeiten" into "?ffnungszeiten").
 */
final class Text {
  private Text() {}

  static byte[] utf8(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  /** NUL-terminated UTF-8 for a `const char *` parameter; a NUL inside is refused, never cut. */
  static byte[] cstr(String s, String what) {
    if (s == null) return null;
    int nul = s.indexOf('\0');
    if (nul >= 0) {
      int offset = s.substring(0, nul).getBytes(StandardCharsets.UTF_8).length;
      throw new ParleyException(Status.INVALID_ARGUMENT, what + " contains a NUL byte at byte offset " + offset);
    }
    byte[] b = s.getBytes(StandardCharsets.UTF_8);
    byte[] out = new byte[b.length + 1];
    System.arraycopy(b, 0, out, 0, b.length);
    return out;
  }

  static String decode(Pointer p, long length) {
    if (p == null || length == 0) return "";
    if (length > Integer.MAX_VALUE) throw new ParleyException(Status.OUT_OF_MEMORY, "a text of " + length + " bytes");
    return new String(p.getByteArray(0, (int) length), StandardCharsets.UTF_8);
  }

  /** A NUL-terminated UTF-8 string owned by Parley (NULL gives ""). */
  static String borrowed(Pointer p) {
    if (p == null) return "";
    long n = p.indexOf(0, (byte) 0);
    return decode(p, n);
  }

  /** A string allocated by Parley: decoded, then parley_string_free'd. */
  static String take(Pointer p) {
    if (p == null) return "";
    try {
      return borrowed(p);
    } finally {
      Api.LIB.parley_string_free(p);
    }
  }

  /** As take, with the length the _json functions report. */
  static String take(PointerByReference p, LongByReference length) {
    Pointer text = p.getValue();
    try {
      return decode(text, length.getValue());
    } finally {
      Api.LIB.parley_string_free(text);
    }
  }

  /**
   * Native memory a call reads (text arrays, strings inside option structs),
   * freed when the arena closes: after the call, or, for a request, once the
   * request is freed.
   */
  static final class Arena implements AutoCloseable {
    private final List<Memory> blocks = new ArrayList<>();

    Memory bytes(byte[] b) {
      Memory m = new Memory(Math.max(1, b.length));
      if (b.length > 0) m.write(0, b, 0, b.length);
      blocks.add(m);
      return m;
    }

    /** A NUL-terminated copy of s (null stays NULL). */
    Pointer cstr(String s, String what) {
      return s == null ? null : bytes(Text.cstr(s, what));
    }

    /** texts as a `const char *const *` and their byte lengths as a `const size_t *` (no NUL needed). */
    Pointer[] texts(List<String> texts) {
      Memory ptrs = new Memory(8L * Math.max(1, texts.size()));
      Memory lengths = new Memory(8L * Math.max(1, texts.size()));
      blocks.add(ptrs);
      blocks.add(lengths);
      for (int i = 0; i < texts.size(); ++i) {
        byte[] b = utf8(texts.get(i));
        ptrs.setPointer(8L * i, bytes(b));
        lengths.setLong(8L * i, b.length);
      }
      return new Pointer[] {ptrs, lengths};
    }

    /** NUL-terminated strings as a `const char *const *`. */
    Pointer cstrArray(List<String> strings, String what) {
      Memory ptrs = new Memory(8L * Math.max(1, strings.size()));
      blocks.add(ptrs);
      for (int i = 0; i < strings.size(); ++i) ptrs.setPointer(8L * i, cstr(strings.get(i), what + " #" + i));
      return ptrs;
    }

    /** int arrays as a `const int32_t *const *` and their lengths as a `const size_t *`. */
    Pointer[] ints(int[][] arrays) {
      Memory ptrs = new Memory(8L * Math.max(1, arrays.length));
      Memory lengths = new Memory(8L * Math.max(1, arrays.length));
      blocks.add(ptrs);
      blocks.add(lengths);
      for (int i = 0; i < arrays.length; ++i) {
        Memory m = new Memory(4L * Math.max(1, arrays[i].length));
        blocks.add(m);
        if (arrays[i].length > 0) m.write(0, arrays[i], 0, arrays[i].length);
        ptrs.setPointer(8L * i, m);
        lengths.setLong(8L * i, arrays[i].length);
      }
      return new Pointer[] {ptrs, lengths};
    }

    @Override
    public void close() {
      for (Memory m : blocks) m.close();
      blocks.clear();
    }
  }

  static int[] ints(Pointer p, long n) {
    if (n == 0 || p == null) return new int[0];
    return p.getIntArray(0, checkedLength(n));
  }

  static float[] floats(Pointer p, long n) {
    if (n == 0 || p == null) return new float[0];
    return p.getFloatArray(0, checkedLength(n));
  }

  static int checkedLength(long n) {
    if (n > Integer.MAX_VALUE - 8) throw new ParleyException(Status.OUT_OF_MEMORY, "an array of " + n + " elements");
    return (int) n;
  }
}
