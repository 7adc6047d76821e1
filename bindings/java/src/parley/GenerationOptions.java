package parley;

/**
 * Decoding settings (parley_generation_options); a field left null keeps the
 * model's generation default. Setters return this for chaining.
 */
public final class GenerationOptions {
  public Long maxNewTokens;
  public Long minNewTokens;
  public Long numBeams;
  public Long numReturnSequences;
  public Boolean doSample;
  public Float temperature;
  public Long topK;
  public Float topP;
  public Float repetitionPenalty;
  public Float lengthPenalty;
  public Long seed;

  public GenerationOptions maxNewTokens(long v) {
    maxNewTokens = v;
    return this;
  }

  public GenerationOptions minNewTokens(long v) {
    minNewTokens = v;
    return this;
  }

  public GenerationOptions numBeams(long v) {
    numBeams = v;
    return this;
  }

  public GenerationOptions numReturnSequences(long v) {
    numReturnSequences = v;
    return this;
  }

  public GenerationOptions doSample(boolean v) {
    doSample = v;
    return this;
  }

  public GenerationOptions temperature(float v) {
    temperature = v;
    return this;
  }

  public GenerationOptions topK(long v) {
    topK = v;
    return this;
  }

  public GenerationOptions topP(float v) {
    topP = v;
    return this;
  }

  public GenerationOptions repetitionPenalty(float v) {
    repetitionPenalty = v;
    return this;
  }

  public GenerationOptions lengthPenalty(float v) {
    lengthPenalty = v;
    return this;
  }

  public GenerationOptions seed(long v) {
    seed = v;
    return this;
  }

  static GenerationOptions orDefaults(GenerationOptions g) {
    return g == null ? new GenerationOptions() : g;
  }

  /** The C struct: the model's defaults (parley_generation_options_defaults), then the fields set here. */
  Api.GenerationOptions toNative(Model model) {
    Api.GenerationOptions g = new Api.GenerationOptions();
    g.struct_size = g.size();
    Status.check(Api.LIB.parley_generation_options_defaults(model.ptr(), g));
    if (maxNewTokens != null) g.max_new_tokens = maxNewTokens;
    if (minNewTokens != null) g.min_new_tokens = minNewTokens;
    if (numBeams != null) g.num_beams = numBeams;
    if (numReturnSequences != null) g.num_return_sequences = numReturnSequences;
    if (doSample != null) g.do_sample = doSample ? 1 : 0;
    if (temperature != null) g.temperature = temperature;
    if (topK != null) g.top_k = topK;
    if (topP != null) g.top_p = topP;
    if (repetitionPenalty != null) g.repetition_penalty = repetitionPenalty;
    if (lengthPenalty != null) g.length_penalty = lengthPenalty;
    if (seed != null) g.seed = seed;
    g.write();
    return g;
  }
}
