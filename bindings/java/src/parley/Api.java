package parley;

import com.sun.jna.Callback;
import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.Structure;
import com.sun.jna.Structure.FieldOrder;
import com.sun.jna.ptr.FloatByReference;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.util.Map;

/**
 * The C ABI of include/parley/parley.h as JNA sees it (package-private: the
 * public classes wrap it). size_t is mapped to {@code long}: the binding
 * refuses to load on a platform whose size_t is not 8 bytes. Text never
 * crosses as {@code String}: it goes in as UTF-8 {@code byte[]} with its byte
 * length (the {@code _n} functions) or NUL-terminated after a NUL check, and
 * comes back as a {@link Pointer} decoded as UTF-8 by {@link Text}, so the
 * JVM's locale (file.encoding, jna.encoding) never touches it. The library is
 * loaded with {@code Library.OPTION_STRING_ENCODING = "UTF-8"} as well, for
 * any String a future function might take.
 */
interface Api extends Library {
  Api LIB = load();

  private static Api load() {
    if (Native.SIZE_T_SIZE != 8 || Native.POINTER_SIZE != 8) {
      throw new UnsatisfiedLinkError("the Parley Java binding needs a 64-bit JVM (size_t is "
          + Native.SIZE_T_SIZE + " bytes here)");
    }
    // PARLEY_LIBRARY (a path, as for the Python binding), else the system
    // property parley.library, else libparley on jna.library.path / the loader's path.
    String name = System.getenv("PARLEY_LIBRARY");
    if (name == null || name.isEmpty()) name = System.getProperty("parley.library", "parley");
    return Native.load(name, Api.class, Map.of(Library.OPTION_STRING_ENCODING, "UTF-8"));
  }

  // ------------------------------------------------------------ callbacks

  /** parley_text_fn: a piece of a chat reply. */
  interface TextFn extends Callback {
    int invoke(Pointer userData, Pointer text, long length);
  }

  /** parley_translation_text_fn: a hypothesis' text so far. */
  interface TranslationTextFn extends Callback {
    int invoke(Pointer userData, long textIndex, long hypothesis, Pointer text, long length, int isFinal);
  }

  // ------------------------------------------------------------ structs
  // Field for field as parley.h declares them; size_t -> long, uint32_t ->
  // int, pointers -> Pointer. The conformance test checks each size against
  // the struct_size the library's exported _init function writes.

  @FieldOrder({"struct_size", "num_threads", "plugin_sources", "plugin_dirs", "num_plugin_dirs", "log_fn",
      "log_user_data", "min_severity"})
  class RuntimeOptions extends Structure {
    public long struct_size;
    public int num_threads;
    public int plugin_sources;
    public Pointer plugin_dirs;
    public long num_plugin_dirs;
    public Pointer log_fn;
    public Pointer log_user_data;
    public int min_severity;
  }

  @FieldOrder({"struct_size", "verify_checksums", "device", "borrow_memory", "reserved0", "read_into_memory",
      "reserved1", "kv_cache_dtype", "reserved2", "serving_engine", "kv_block_size", "kv_cache_budget_bytes",
      "max_batch_sequences", "max_batch_tokens", "prefill_chunk_tokens", "admission_timeout_ms", "activation_dtype"})
  class ModelOptions extends Structure {
    public long struct_size;
    public int verify_checksums;
    public Pointer device;
    public int borrow_memory;
    public int reserved0;
    public int read_into_memory;
    public int reserved1;
    public int kv_cache_dtype;
    public int reserved2;
    public int serving_engine;
    public int kv_block_size;
    public long kv_cache_budget_bytes;
    public int max_batch_sequences;
    public int max_batch_tokens;
    public int prefill_chunk_tokens;
    public int admission_timeout_ms;
    public int activation_dtype;
  }

  @FieldOrder({"struct_size", "format_major", "format_minor", "architecture", "kind", "vocab_size", "num_tensors",
      "num_tokenizers", "num_metadata", "has_chat_template", "file_size", "weights_size", "device"})
  class ModelInfo extends Structure {
    public long struct_size;
    public int format_major;
    public int format_minor;
    public Pointer architecture;
    public int kind;
    public int vocab_size;
    public long num_tensors;
    public long num_tokenizers;
    public long num_metadata;
    public int has_chat_template;
    public long file_size;
    public long weights_size;
    public Pointer device;
  }

  @FieldOrder({"struct_size", "max_new_tokens", "min_new_tokens", "num_beams", "num_return_sequences",
      "length_penalty", "early_stopping", "no_repeat_ngram_size", "repetition_penalty", "do_sample", "temperature",
      "top_k", "top_p", "min_p", "seed", "eos_token_ids", "num_eos_token_ids", "on_token", "user_data", "grammar",
      "json_schema", "return_logprobs", "num_alternatives", "logit_bias_ids", "logit_bias_values", "num_logit_bias"})
  class GenerationOptions extends Structure {
    public long struct_size;
    public long max_new_tokens;
    public long min_new_tokens;
    public long num_beams;
    public long num_return_sequences;
    public float length_penalty;
    public int early_stopping;
    public long no_repeat_ngram_size;
    public float repetition_penalty;
    public int do_sample;
    public float temperature;
    public long top_k;
    public float top_p;
    public float min_p;
    public long seed;
    public Pointer eos_token_ids;
    public long num_eos_token_ids;
    public Pointer on_token;
    public Pointer user_data;
    public Pointer grammar;
    public Pointer json_schema;
    public int return_logprobs;
    public long num_alternatives;
    public Pointer logit_bias_ids;
    public Pointer logit_bias_values;
    public long num_logit_bias;
  }

  @FieldOrder({"struct_size", "source_language", "target_language", "generation", "return_attention",
      "attention_layer", "per_text_errors", "on_text", "user_data", "protect", "long_text", "protect_patterns",
      "num_protect_patterns", "glossary", "num_glossary", "max_source_tokens", "max_batch_tokens"})
  class TranslationOptions extends Structure {
    public long struct_size;
    public Pointer source_language;
    public Pointer target_language;
    public Pointer generation;
    public int return_attention;
    public int attention_layer;
    public int per_text_errors;
    public TranslationTextFn on_text;
    public Pointer user_data;
    public int protect;
    public int long_text;
    public Pointer protect_patterns;
    public long num_protect_patterns;
    public Pointer glossary;
    public long num_glossary;
    public long max_source_tokens;
    public long max_batch_tokens;
  }

  @FieldOrder({"struct_size", "generation", "stop_strings", "num_stop_strings", "on_text", "user_data",
      "context_policy"})
  class ChatOptions extends Structure {
    public long struct_size;
    public Pointer generation;
    public Pointer stop_strings;
    public long num_stop_strings;
    public TextFn on_text;
    public Pointer user_data;
    public int context_policy;
  }

  @FieldOrder({"struct_size", "on_complete", "user_data", "deadline_ms", "return_logprobs", "num_alternatives"})
  class RequestOptions extends Structure {
    public long struct_size;
    public Pointer on_complete;
    public Pointer user_data;
    public long deadline_ms;
    public int return_logprobs;
    public long num_alternatives;
  }

  // ------------------------------------------------------------ functions

  Pointer parley_version_string();
  Pointer parley_status_name(int status);
  Pointer parley_last_error();
  void parley_string_free(Pointer text);

  // The exported _init functions (the layout check: the struct_size they write).
  int parley_runtime_options_init(Pointer options);
  int parley_model_options_init(Pointer options);
  int parley_generation_options_init(Pointer model, Pointer options);
  int parley_translation_options_init(Pointer options);
  int parley_chat_options_init(Pointer options);
  int parley_request_options_init(Pointer options);

  // The _defaults functions: they write only struct_size bytes, the size of
  // the mirrors above (parley.h: an FFI layer that looks symbols up by name
  // gets the newest _init, which may write a later, larger struct).
  int parley_runtime_options_defaults(RuntimeOptions options);
  int parley_model_options_defaults(ModelOptions options);
  int parley_generation_options_defaults(Pointer model, GenerationOptions options);
  int parley_translation_options_defaults(TranslationOptions options);
  int parley_chat_options_defaults(ChatOptions options);
  int parley_request_options_defaults(RequestOptions options);

  int parley_runtime_create(RuntimeOptions options, PointerByReference out);
  void parley_runtime_free(Pointer runtime);
  int parley_runtime_load_plugin(Pointer runtime, byte[] path);

  int parley_model_load_file(Pointer runtime, byte[] path, ModelOptions options, PointerByReference out);
  int parley_model_load_memory(Pointer runtime, byte[] data, long size, ModelOptions options,
      PointerByReference out);
  void parley_model_free(Pointer model);
  int parley_model_get_info(Pointer model, ModelInfo info);
  int parley_model_verify_tensor(Pointer model, byte[] name);

  int parley_tokenize_n(Pointer model, byte[] text, long length, int flags, byte[] language, int[] ids,
      long capacity, LongByReference count);
  int parley_detokenize(Pointer model, int[] ids, long count, int skipSpecial, PointerByReference out);

  int parley_generate(Pointer model, Pointer prompts, Pointer lengths, long batch, GenerationOptions options,
      PointerByReference out);
  int parley_result_batch_size(Pointer result, LongByReference out);
  int parley_result_hypothesis_count(Pointer result, long batch, LongByReference out);
  int parley_result_hypothesis(Pointer result, long batch, long index, PointerByReference tokens,
      LongByReference length, FloatByReference score);
  int parley_result_json(Pointer result, int flags, PointerByReference json, LongByReference length);
  void parley_result_free(Pointer result);

  int parley_translate_n(Pointer model, Pointer texts, Pointer lengths, long count, TranslationOptions options,
      PointerByReference out);
  int parley_translation_result_count(Pointer result, LongByReference out);
  int parley_translation_result_hypothesis_count(Pointer result, long index, LongByReference out);
  int parley_translation_result_text(Pointer result, long index, long hypothesis, PointerByReference text,
      FloatByReference score);
  int parley_translation_result_source_tokens(Pointer result, long index, PointerByReference ids,
      LongByReference count);
  int parley_translation_result_target_tokens(Pointer result, long index, long hypothesis,
      PointerByReference ids, LongByReference count);
  int parley_translation_result_attention(Pointer result, long index, long hypothesis, PointerByReference weights,
      LongByReference rows, LongByReference cols);
  int parley_translation_result_error(Pointer result, long index, IntByReference status,
      PointerByReference message);
  int parley_translation_result_cut_by_length(Pointer result, long index, long hypothesis, IntByReference cut);
  int parley_translation_result_json(Pointer result, int flags, PointerByReference json, LongByReference length);
  void parley_translation_result_free(Pointer result);

  int parley_chat_session_create_n(Pointer model, byte[] system, long length, PointerByReference out);
  void parley_chat_session_free(Pointer session);
  int parley_chat_append_n(Pointer session, int role, byte[] content, long length);
  int parley_chat_generate(Pointer session, ChatOptions options, PointerByReference reply);
  int parley_chat_cancel(Pointer session);
  int parley_chat_reset(Pointer session);
  int parley_chat_remove_last(Pointer session);
  int parley_chat_message_count(Pointer session, LongByReference out);
  int parley_chat_message(Pointer session, long index, IntByReference role, PointerByReference content);

  int parley_chat_submit(Pointer session, ChatOptions options, RequestOptions requestOptions,
      PointerByReference out);
  int parley_translate_submit(Pointer model, Pointer texts, Pointer lengths, long count,
      TranslationOptions options, RequestOptions requestOptions, PointerByReference out);
  int parley_request_wait(Pointer request, long timeoutMs);
  int parley_request_poll(Pointer request, IntByReference done);
  int parley_request_cancel(Pointer request);
  int parley_request_status(Pointer request, IntByReference status, PointerByReference message);
  int parley_request_take_reply(Pointer request, PointerByReference reply);
  int parley_request_take_translation_result(Pointer request, PointerByReference result);
  int parley_request_json(Pointer request, int flags, PointerByReference json, LongByReference length);
  void parley_request_free(Pointer request);
}
