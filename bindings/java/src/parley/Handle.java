package parley;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Reference;
import java.lang.ref.Cleaner;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * An owned Parley object: freed by {@link #close()} (use try-with-resources)
 * or, if a program forgets that, by a {@link Cleaner} once it is unreachable.
 * A handle that others depend on (a model with open chat sessions, a session
 * with a running request) refuses to close until they are closed
 * ({@link Status#BUSY}): the C API requires the model to outlive its
 * sessions. After close the handle is NULL, so every later call fails with
 * {@link Status#INVALID_ARGUMENT} (the C API's NULL check) instead of using
 * freed memory. close must not race with other calls on the same handle
 * (parley.h: a _free must not race with other uses).
 */
abstract class Handle implements AutoCloseable {
  private static final Cleaner CLEANER = Cleaner.create();
  /** Handles created and not yet freed (the leak check of the conformance test). */
  static final AtomicLong LIVE = new AtomicLong();

  /** What the cleaner runs: holds the pointer, never the handle itself. */
  private static final class State implements Runnable {
    private volatile Pointer ptr;
    private final Consumer<Pointer> free;
    private final Handle parent;

    State(Pointer ptr, Consumer<Pointer> free, Handle parent) {
      this.ptr = ptr;
      this.free = free;
      this.parent = parent;
    }

    @Override
    public void run() {
      Pointer p = ptr;
      ptr = null;
      if (p != null) {
        free.accept(p);
        LIVE.decrementAndGet();
      }
      if (parent != null) parent.dependents.decrementAndGet();
    }
  }

  private final AtomicInteger dependents = new AtomicInteger();
  private final State state;
  private final Cleaner.Cleanable cleanable;

  /** @param parent a handle that must stay open while this one is (or null) */
  Handle(Pointer ptr, Consumer<Pointer> free, Handle parent) {
    if (parent != null) parent.dependents.incrementAndGet();
    state = new State(ptr, free, parent);
    if (ptr != null) LIVE.incrementAndGet();
    cleanable = CLEANER.register(this, state);
  }

  /** The C handle; NULL once closed (the C API then answers INVALID_ARGUMENT). */
  final Pointer ptr() {
    return state.ptr;
  }

  final boolean isClosed() {
    return state.ptr == null;
  }

  /** A C getter on this handle that writes a count (size_t) through its last argument. */
  interface CountCall {
    int call(Pointer self, LongByReference out);
  }

  /** A C call on this handle that returns a malloc'd UTF-8 buffer and its length. */
  interface TextCall {
    int call(Pointer self, PointerByReference out, LongByReference length);
  }

  /** Runs a count getter: status checked, this handle kept reachable until it returns. */
  final int countOf(CountCall c) {
    try {
      LongByReference n = new LongByReference();
      Status.check(c.call(ptr(), n));
      return (int) n.getValue();
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** Runs a text call and takes (frees) its buffer: status checked, this handle kept reachable. */
  final String textOf(TextCall c) {
    try {
      PointerByReference p = new PointerByReference();
      LongByReference n = new LongByReference();
      Status.check(c.call(ptr(), p, n));
      return Text.take(p, n);
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  @Override
  public void close() {
    int n = dependents.get();
    if (n > 0) {
      throw new ParleyException(Status.BUSY, getClass().getSimpleName() + " still has " + n
          + " open dependent object(s) (chat sessions or requests): close them first");
    }
    cleanable.clean();
  }
}
