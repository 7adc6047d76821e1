package parley;

/** Text translation settings (parley_translation_options). */
public final class TranslationOptions {
  public GenerationOptions generation = new GenerationOptions();
  /** Multilingual models: language codes ("deu_Latn", "de"...); null otherwise. */
  public String sourceLanguage;
  public String targetLanguage;
  /** Keep each hypothesis' source attention ({@link TranslationResult#attention}). */
  public boolean returnAttention;
  /** A text that cannot be translated fails alone ({@link TranslationResult#error}). */
  public boolean perTextErrors;

  public TranslationOptions generation(GenerationOptions g) {
    generation = g;
    return this;
  }

  public TranslationOptions returnAttention(boolean v) {
    returnAttention = v;
    return this;
  }

  public TranslationOptions perTextErrors(boolean v) {
    perTextErrors = v;
    return this;
  }

  public TranslationOptions languages(String source, String target) {
    sourceLanguage = source;
    targetLanguage = target;
    return this;
  }

  Api.TranslationOptions toNative(Text.Arena arena, Api.GenerationOptions g) {
    Api.TranslationOptions o = new Api.TranslationOptions();
    o.struct_size = o.size();
    Status.check(Api.LIB.parley_translation_options_defaults(o));
    o.source_language = arena.cstr(sourceLanguage, "source language");
    o.target_language = arena.cstr(targetLanguage, "target language");
    o.generation = g.getPointer();
    o.return_attention = returnAttention ? 1 : 0;
    o.per_text_errors = perTextErrors ? 1 : 0;
    return o;
  }
}
