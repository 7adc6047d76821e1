// Typings of the Parley Node.js binding (index.js).

/** parley.h status codes (Error.status); Error.code is the name, e.g. "PARLEY_ERROR_CANCELLED". */
export declare const Status: Readonly<{
  OK: 0;
  INVALID_ARGUMENT: 1;
  OUT_OF_MEMORY: 2;
  IO: 3;
  INVALID_MODEL: 4;
  UNSUPPORTED_VERSION: 5;
  CHECKSUM: 6;
  NOT_FOUND: 7;
  PLUGIN: 8;
  DEVICE: 9;
  UNSUPPORTED: 10;
  INTERNAL: 11;
  CANCELLED: 12;
  BUSY: 13;
  TIMEOUT: 14;
}>;
export declare const TokenizeFlags: Readonly<{ ADD_SPECIAL: 1; PARSE_SPECIAL: 65536 }>;
export declare const Protect: Readonly<{ NUMBERS: 1; EMAILS: 2; URLS: 4; PLACEHOLDERS: 8; MARKUP: 16; ALL: 31 }>;

/** The Error every Parley failure rejects or throws with. */
export interface ParleyError extends Error {
  /** The status name, e.g. "PARLEY_ERROR_CANCELLED". */
  code: string;
  /** The numeric status (Status). */
  status: number;
  /** A failed request's document (docs/results_json.md, "Request"). */
  json?: string;
}

export declare function statusName(code: number): string;
export declare function version(): string;

export interface RuntimeOptions {
  /** Kernel threads; 0 (default): one per CPU. */
  numThreads?: number;
  /** Directories searched for plugins first. */
  pluginDirs?: string[];
  /** PARLEY_PLUGINS_* flags (default: beside the library, PARLEY_PLUGIN_PATH, built in). */
  pluginSources?: number;
  /** 0 debug, 1 info, 2 warning (default), 3 error. */
  minSeverity?: number;
}

export interface ModelOptions {
  device?: string;
  verifyChecksums?: boolean;
  readIntoMemory?: boolean;
  kvCacheDtype?: number;
  servingEngine?: boolean;
  kvBlockSize?: number;
  kvCacheBudgetBytes?: number | bigint;
  maxBatchSequences?: number;
  maxBatchTokens?: number;
  prefillChunkTokens?: number;
  admissionTimeoutMs?: number;
  /** parley_dtype of the activations: 0 = F32 (default), 1 = F16 (needs F16 kernels on the device and kvCacheDtype 1 or 3). */
  activationDtype?: number;
}

/** parley_generation_options; absent keys keep the model's generation defaults. */
export interface GenerationOptions {
  maxNewTokens?: number;
  minNewTokens?: number;
  numBeams?: number;
  numReturnSequences?: number;
  lengthPenalty?: number;
  earlyStopping?: boolean | 'never';
  noRepeatNgramSize?: number;
  repetitionPenalty?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  seed?: number | bigint;
  eosTokenIds?: number[] | Int32Array;
  grammar?: string;
  jsonSchema?: string | object;
  returnLogprobs?: boolean;
  numAlternatives?: number;
}

export interface RequestOptions {
  /** Milliseconds until the request fails with PARLEY_ERROR_TIMEOUT. */
  deadlineMs?: number;
  returnLogprobs?: boolean;
  /** Aborting it cancels the request. */
  signal?: AbortSignal;
}

export interface TranslationOptions extends RequestOptions {
  generation?: GenerationOptions;
  sourceLanguage?: string;
  targetLanguage?: string;
  returnAttention?: boolean;
  attentionLayer?: number;
  perTextErrors?: boolean;
  protect?: number;
  longText?: number;
  protectPatterns?: string[];
  glossary?: string[];
  maxSourceTokens?: number;
  maxBatchTokens?: number;
  /** Leave token ids / attention out of the result. */
  noTokens?: boolean;
  noAttention?: boolean;
  /** Streaming: the hypothesis' whole text so far; return false to stop streaming. */
  onText?: (textIndex: number, hypothesis: number, textSoFar: string, isFinal: boolean) => boolean | void;
}

export interface GenerateOptions extends RequestOptions {
  generation?: GenerationOptions;
  noTokens?: boolean;
  /** Streaming (greedy / sampling); return false to finish that sequence. */
  onToken?: (batchIndex: number, sequenceIndex: number, token: number) => boolean | void;
}

export interface ChatOptions extends RequestOptions {
  generation?: GenerationOptions;
  stopStrings?: string[];
  contextPolicy?: 'error' | 'dropOldest';
  /** Each new piece of the reply; return false to end the reply early. */
  onText?: (piece: string) => boolean | void;
}

/** docs/results_json.md, "Translation". */
export interface TranslationResult {
  kind: 'translation';
  texts: Array<{
    status: string;
    status_code: number;
    message: string;
    segments: number;
    source_tokens?: number[];
    hypotheses: Array<{
      text: string;
      score: number | null;
      cut_by_length: boolean; // used up max_new_tokens: the text may be cut short
      tokens?: number[];
      attention?: number[][];
      logprobs?: number[];
      protected_spans: Array<{
        kind: string;
        placement: string;
        source_offset: number;
        source_length: number;
        target_offset: number;
        target_length: number;
      }>;
    }>;
  }>;
}

/** docs/results_json.md, "Generation". */
export interface GenerationResult {
  kind: 'generation';
  batch: Array<{
    hypotheses: Array<{ tokens?: number[]; score: number | null; logprobs?: number[]; constraint: string }>;
  }>;
}

/** A running request: await it; cancel() stops it (PARLEY_ERROR_CANCELLED). */
export declare class Request<T> implements PromiseLike<T> {
  readonly promise: Promise<T>;
  cancel(): void;
  /** The request document once settled (docs/results_json.md), else undefined. */
  json(): string | undefined;
  then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: any) => B | PromiseLike<B>) | null,
  ): Promise<A | B>;
  catch<B = never>(onRejected?: ((reason: any) => B | PromiseLike<B>) | null): Promise<T | B>;
  finally(onFinally?: (() => void) | null): Promise<T>;
}

export declare class Runtime {
  constructor(options?: RuntimeOptions);
  loadPlugin(path: string): void;
  loadModel(source: string | Uint8Array, options?: ModelOptions): Promise<Model>;
  close(): void;
}

export interface ModelInfo {
  architecture: string;
  kind: 'decoder-only' | 'encoder-decoder';
  formatVersion: string;
  vocabSize: number;
  numTensors: number;
  numTokenizers: number;
  hasChatTemplate: boolean;
  fileSize: number;
  weightsSize: number;
  device: string;
}

export declare class Model {
  private constructor();
  info(): ModelInfo;
  tokenize(text: string, flags?: number): Int32Array;
  detokenize(ids: number[] | Int32Array, skipSpecialTokens?: boolean): string;
  verifyTensor(name: string): void;
  translate(texts: string[], options?: TranslationOptions): Request<TranslationResult>;
  generate(prompts: Array<number[] | Int32Array>, options?: GenerateOptions): Request<GenerationResult>;
  chat(systemPrompt?: string | null): ChatSession;
  close(): void;
}

export type Role = 'system' | 'user' | 'assistant' | 'tool';

export interface ChatStats {
  promptTokens: number;
  reusedTokens: number;
  processedTokens: number;
  generatedTokens: number;
  totalProcessedTokens: number;
  cachedTokens: number;
  droppedMessages: number;
  totalDroppedMessages: number;
}

export declare class ChatSession {
  constructor(model: Model, systemPrompt?: string | null);
  append(role: Role, content: string): void;
  generate(options?: ChatOptions): Request<string>;
  send(content: string, options?: ChatOptions): Request<string>;
  cancel(): void;
  messageCount(): number;
  message(index: number): { role: Role; content: string };
  messages(): Array<{ role: Role; content: string }>;
  removeLast(): void;
  reset(): void;
  stats(): ChatStats;
  close(): void;
}
