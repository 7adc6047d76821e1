package parley;

import java.util.ArrayList;
import java.util.List;

/** Chat turn settings (parley_chat_options). */
public final class ChatOptions {
  public GenerationOptions generation = new GenerationOptions();
  /** The reply ends before the first of these. */
  public List<String> stopStrings = new ArrayList<>();

  public ChatOptions generation(GenerationOptions g) {
    generation = g;
    return this;
  }

  public ChatOptions stopStrings(List<String> s) {
    stopStrings = new ArrayList<>(s);
    return this;
  }

  Api.ChatOptions toNative(Text.Arena arena, Api.GenerationOptions g) {
    Api.ChatOptions o = new Api.ChatOptions();
    o.struct_size = o.size();
    Status.check(Api.LIB.parley_chat_options_defaults(o));
    o.generation = g.getPointer();
    if (stopStrings != null && !stopStrings.isEmpty()) {
      o.stop_strings = arena.cstrArray(stopStrings, "stop string");
      o.num_stop_strings = stopStrings.size();
    }
    return o;
  }
}
