package parley;

import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Reference;
import java.util.List;

/**
 * A thread pool, a kernel registry and the plugins (parley_runtime). May be
 * used by several threads at once; models loaded from it keep what they need,
 * so it may be closed before them.
 */
public final class ParleyRuntime extends Handle {
  private static final int PLUGINS_NONE = 0;

  private ParleyRuntime(com.sun.jna.Pointer p) {
    super(p, Api.LIB::parley_runtime_free, null);
  }

  /**
   * A runtime with the default plugin locations (beside libparley,
   * PARLEY_PLUGIN_PATH, built-in) and one thread per CPU.
   */
  public static ParleyRuntime create() {
    PointerByReference out = new PointerByReference();
    Status.check(Api.LIB.parley_runtime_create(null, out));
    return new ParleyRuntime(out.getValue());
  }

  /** A runtime loading plugins only from {@code pluginDirs}; {@code numThreads} 0: one per CPU. */
  public static ParleyRuntime create(List<String> pluginDirs, int numThreads) {
    try (Text.Arena arena = new Text.Arena()) {
      Api.RuntimeOptions o = new Api.RuntimeOptions();
      o.struct_size = o.size();
      Status.check(Api.LIB.parley_runtime_options_defaults(o));
      o.plugin_sources = PLUGINS_NONE;
      o.plugin_dirs = arena.cstrArray(pluginDirs, "plugin dir");
      o.num_plugin_dirs = pluginDirs.size();
      o.num_threads = numThreads;
      PointerByReference out = new PointerByReference();
      Status.check(Api.LIB.parley_runtime_create(o, out));
      return new ParleyRuntime(out.getValue());
    }
  }

  /** Load one plugin library. Errors: IO, PLUGIN (no entry point, ABI mismatch, duplicate). */
  public void loadPlugin(String path) {
    try {
      Status.check(Api.LIB.parley_runtime_load_plugin(ptr(), Text.cstr(path, "plugin path")));
    } finally {
      Reference.reachabilityFence(this);
    }
  }

  /** The loaded library's version, e.g. "0.1.0". */
  public static String version() {
    return Text.borrowed(Api.LIB.parley_version_string());
  }
}
