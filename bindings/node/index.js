'use strict';
// Parley for Node.js: classes over the Node-API addon parley.node (src/),
// which calls the C ABI (include/parley/parley.h). Loading a model, a
// translation, a generation and a chat turn run off the JS thread and return
// Promises; streaming callbacks run on the JS thread. Whole results are read
// as the JSON documents of docs/results_json.md.
const path = require('node:path');

// PARLEY_NODE_ADDON names the addon file (the build tree's); otherwise it is
// parley.node beside this file (the installed layout).
const native = require(process.env.PARLEY_NODE_ADDON || path.join(__dirname, 'parley.node'));

/** Status codes of parley.h (error.status); error.code is the name (PARLEY_ERROR_...). */
const Status = Object.freeze({
  OK: 0,
  INVALID_ARGUMENT: 1,
  OUT_OF_MEMORY: 2,
  IO: 3,
  INVALID_MODEL: 4,
  UNSUPPORTED_VERSION: 5,
  CHECKSUM: 6,
  NOT_FOUND: 7,
  PLUGIN: 8,
  DEVICE: 9,
  UNSUPPORTED: 10,
  INTERNAL: 11,
  CANCELLED: 12,
  BUSY: 13,
  TIMEOUT: 14,
});

/** parley_tokenize_flags. */
const TokenizeFlags = Object.freeze({ ADD_SPECIAL: 1, PARSE_SPECIAL: 1 << 16 });

/** parley_protect_flags (translation options `protect`). */
const Protect = Object.freeze({ NUMBERS: 1, EMAILS: 2, URLS: 4, PLACEHOLDERS: 8, MARKUP: 16, ALL: 31 });

function checkFunction(value, what) {
  if (value !== undefined && value !== null && typeof value !== 'function') {
    throw new TypeError(`${what} must be a function`);
  }
  return value ?? null;
}

function checkOptions(options) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object' || Array.isArray(options)) throw new TypeError('options must be an object');
  return options;
}

// The options object the addon reads: a JSON schema given as an object is
// passed as its text.
function nativeOptions(options) {
  const g = options.generation;
  if (g && typeof g === 'object' && g.jsonSchema !== undefined && typeof g.jsonSchema !== 'string') {
    return { ...options, generation: { ...g, jsonSchema: JSON.stringify(g.jsonSchema) } };
  }
  return options;
}

/**
 * A running translation, generation or chat turn. Await it (it is a
 * thenable) or its `promise`; `cancel()` asks Parley to stop it
 * (parley_request_cancel): the Promise then rejects with code
 * PARLEY_ERROR_CANCELLED unless the work finished first. An AbortSignal
 * given as option `signal` cancels it too.
 */
class Request {
  constructor(handle, map, signal) {
    this._h = handle;
    this._json = undefined;
    this.promise = handle.promise.then(
      (json) => {
        this._json = json;
        return map(JSON.parse(json).result);
      },
      (err) => {
        if (err && typeof err.json === 'string') this._json = err.json;
        throw err;
      },
    );
    if (signal !== undefined && signal !== null) {
      if (typeof signal.addEventListener !== 'function' || typeof signal.aborted !== 'boolean') {
        throw new TypeError('options.signal must be an AbortSignal');
      }
      if (signal.aborted) {
        this.cancel();
      } else {
        const onAbort = () => this.cancel();
        signal.addEventListener('abort', onAbort, { once: true });
        this.promise.finally(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
      }
    }
  }

  /** Ask the work to stop (harmless after the end). */
  cancel() {
    native.requestCancel(this._h);
  }

  /** The request document (docs/results_json.md, "Request") once settled; undefined before. */
  json() {
    return this._json;
  }

  then(onFulfilled, onRejected) {
    return this.promise.then(onFulfilled, onRejected);
  }

  catch(onRejected) {
    return this.promise.catch(onRejected);
  }

  finally(onFinally) {
    return this.promise.finally(onFinally);
  }
}

function dispose(cls) {
  if (typeof Symbol.dispose === 'symbol') cls.prototype[Symbol.dispose] = cls.prototype.close;
}

/** A Parley runtime: kernel threads and plugins (parley_runtime_create). */
class Runtime {
  /**
   * @param {object} [options] numThreads (0: one per CPU), pluginDirs
   *   (directories searched first), pluginSources (PARLEY_PLUGINS_* flags),
   *   minSeverity (0 debug .. 3 error).
   */
  constructor(options) {
    this._h = native.runtimeCreate(options);
  }

  /** Load one plugin library (parley_runtime_load_plugin). */
  loadPlugin(file) {
    native.runtimeLoadPlugin(this._h, file);
  }

  /**
   * Load a model from a file path or from bytes (a Buffer / Uint8Array,
   * copied), off the JS thread. Resolves to a Model.
   */
  loadModel(source, options) {
    return native.modelLoad(this._h, source, options).then((h) => new Model(h));
  }

  /** Release the runtime (models loaded from it keep what they need). */
  close() {
    native.runtimeClose(this._h);
  }
}
dispose(Runtime);

/** A loaded model (parley_model). */
class Model {
  constructor(handle) {
    this._h = handle;
  }

  /** parley_model_get_info as an object. */
  info() {
    return native.modelInfo(this._h);
  }

  /** Token ids of `text` (Int32Array); flags: TokenizeFlags (default ADD_SPECIAL). */
  tokenize(text, flags) {
    return native.modelTokenize(this._h, text, flags);
  }

  /** The text of `ids` (special tokens dropped unless skipSpecialTokens is false). */
  detokenize(ids, skipSpecialTokens) {
    return native.modelDetokenize(this._h, ids, skipSpecialTokens);
  }

  /** Check one tensor's checksum (parley_model_verify_tensor); throws on a mismatch. */
  verifyTensor(name) {
    native.modelVerifyTensor(this._h, name);
  }

  /**
   * Translate an array of texts. Resolves to the translation document
   * (`{kind: 'translation', texts: [{status, hypotheses: [{text, score,
   * tokens, attention?, ...}]}]}`). options: generation (numBeams,
   * numReturnSequences, maxNewTokens, ...), returnAttention, perTextErrors,
   * sourceLanguage, targetLanguage, protect, ..., deadlineMs, noTokens,
   * noAttention, signal, and onText(textIndex, hypothesis, textSoFar,
   * isFinal) to stream (return false to stop streaming).
   */
  translate(texts, options) {
    options = checkOptions(options);
    const onText = checkFunction(options.onText, 'options.onText');
    const h = native.translate(this._h, texts, nativeOptions(options), onText);
    return new Request(h, (result) => result, options.signal);
  }

  /**
   * Continue token id prompts (decoder-only models). Resolves to the
   * generation document (`{kind: 'generation', batch: [{hypotheses:
   * [{tokens, score, ...}]}]}`). options: generation, deadlineMs,
   * returnLogprobs, noTokens, signal, onToken(batchIndex, sequenceIndex, token).
   */
  generate(prompts, options) {
    options = checkOptions(options);
    const onToken = checkFunction(options.onToken, 'options.onToken');
    const h = native.generate(this._h, prompts, nativeOptions(options), onToken);
    return new Request(h, (result) => result, options.signal);
  }

  /** A new chat session (systemPrompt may be omitted). */
  chat(systemPrompt) {
    return new ChatSession(this, systemPrompt);
  }

  /**
   * Release the model. Sessions and running requests of it keep it alive
   * until they are closed or done.
   */
  close() {
    native.modelClose(this._h);
  }
}
dispose(Model);

/** A conversation with a decoder-only model (parley_chat_session). */
class ChatSession {
  constructor(model, systemPrompt) {
    if (!(model instanceof Model)) throw new TypeError('model must be a parley Model');
    this._h = native.sessionCreate(model._h, systemPrompt ?? null);
  }

  /** Append a message; role: 'system' | 'user' | 'assistant' | 'tool'. */
  append(role, content) {
    native.sessionAppend(this._h, role, content);
  }

  /**
   * Generate the assistant's reply (appended to the conversation when the
   * turn succeeds). Resolves to the reply text. options: generation,
   * stopStrings, contextPolicy ('error' | 'dropOldest'), deadlineMs,
   * returnLogprobs, signal, and onText(piece) to stream (return false to end
   * the reply early; pieces already produced still arrive).
   */
  generate(options) {
    options = checkOptions(options);
    const onText = checkFunction(options.onText, 'options.onText');
    const h = native.chatSubmit(this._h, nativeOptions(options), onText);
    return new Request(h, (result) => result.reply, options.signal);
  }

  /** append('user', content), then generate(options). */
  send(content, options) {
    this.append('user', content);
    return this.generate(options);
  }

  /** Ask the running turn to stop (parley_chat_cancel). */
  cancel() {
    native.sessionCancel(this._h);
  }

  messageCount() {
    return native.sessionMessageCount(this._h);
  }

  /** Message `index`: {role, content}. */
  message(index) {
    return native.sessionMessage(this._h, index);
  }

  messages() {
    const n = this.messageCount();
    const out = [];
    for (let i = 0; i < n; ++i) out.push(this.message(i));
    return out;
  }

  /** Drop the last message. */
  removeLast() {
    native.sessionRemoveLast(this._h);
  }

  /** Drop every message after the system prompt. */
  reset() {
    native.sessionReset(this._h);
  }

  /** Counters of the last turn (parley_chat_stats). */
  stats() {
    return native.sessionStats(this._h);
  }

  /** Release the session (a running turn keeps it until the turn ends). */
  close() {
    native.sessionClose(this._h);
  }
}
dispose(ChatSession);

module.exports = {
  Runtime,
  Model,
  ChatSession,
  Request,
  Status,
  TokenizeFlags,
  Protect,
  statusName: (code) => native.statusName(code),
  version: () => native.version(),
};
