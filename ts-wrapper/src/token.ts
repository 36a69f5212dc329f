// Connection tokens: one opaque string with everything an edge needs to reach its hub.
//
// A token is base64url (RFC 4648 §5) of the JSON `{"h":hubHost,"p":hubPort,"e":edgeId,"s":secret,
// "f"?:sha256hex}`, written without padding, `f` left out when no hub certificate is pinned. The
// Rust side (engine/src/token.rs) writes and reads the same; test/token.test.ts checks that each
// side decodes the other's tokens and that both refuse malformed ones. The field rules are Rust's
// (engine/src/ident.rs for the id and secret). No message contains the secret or the token.

/** Everything an edge needs to connect to its hub. */
export interface IConnectionTokenData {
  /** Hub host name or IP address (ASCII; international names in punycode). */
  hubHost: string;
  /** Hub tunnel port, 1..65535. */
  hubPort: number;
  /** This edge's id. */
  edgeId: string;
  /** This edge's secret. */
  secret: string;
  /** Hex SHA-256 of the hub certificate to pin; lower-case when decoded. */
  hubCertSha256?: string;
}

/** What went wrong: the token's text (`encoding`), its JSON (`json`), or one field (`field`). */
export type TConnectionTokenErrorKind = 'encoding' | 'json' | 'field';

/** A token that cannot be decoded, or data that cannot be encoded. Never quotes the secret. */
export class ConnectionTokenError extends Error {
  readonly kind: TConnectionTokenErrorKind;

  constructor(kind: TConnectionTokenErrorKind, message: string) {
    super(message);
    this.name = 'ConnectionTokenError';
    this.kind = kind;
  }
}

const MAX_TOKEN_LEN = 8 * 1024;
const MAX_HUB_HOST_LEN = 253;
const MAX_IDENT_LEN = 1024;
/** Shortest accepted secret, in bytes (engine/src/ident.rs MIN_SECRET_LEN). */
const MIN_SECRET_LEN = 16;
const WHITESPACE_OR_CONTROL = /[\p{White_Space}\p{Cc}]/u;
const FIELDS = { h: 'hub host', p: 'hub port', e: 'edge id', s: 'secret', f: 'hub certificate fingerprint' };

function fieldError(key: keyof typeof FIELDS, problem: string): ConnectionTokenError {
  return new ConnectionTokenError('field', `token field "${key}" (${FIELDS[key]}) ${problem}`);
}

function kindOf(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

function text(key: keyof typeof FIELDS, value: unknown): string {
  if (value === undefined) throw fieldError(key, 'is missing');
  if (typeof value !== 'string') throw fieldError(key, `must be a string, found ${kindOf(value)}`);
  // Lone surrogates cannot be carried by UTF-8 (nor by a Rust string).
  if (!value.isWellFormed()) throw fieldError(key, 'is not valid Unicode (a lone surrogate)');
  return value;
}

/** Checks each field as the Rust decoder does; returns the data with the fingerprint lower-case. */
function validate(input: Record<string, unknown>): IConnectionTokenData {
  const hubHost = text('h', input['h']);
  if (hubHost.length === 0) throw fieldError('h', 'must not be empty');
  if (Buffer.byteLength(hubHost) > MAX_HUB_HOST_LEN) throw fieldError('h', `is longer than ${MAX_HUB_HOST_LEN} bytes`);
  if (WHITESPACE_OR_CONTROL.test(hubHost)) throw fieldError('h', 'must not contain whitespace or control characters');
  if (!/^[\x00-\x7f]*$/.test(hubHost)) throw fieldError('h', 'must be ASCII (write an international name in punycode, xn--)');
  const hubPort = input['p'];
  if (typeof hubPort !== 'number' || !Number.isInteger(hubPort) || hubPort < 1 || hubPort > 65535) {
    throw fieldError('p', 'must be an integer 1..65535');
  }
  const [edgeId, secret] = (['e', 's'] as const).map((key) => {
    const value = text(key, input[key]);
    if (value.length === 0) throw fieldError(key, 'must not be empty');
    if (Buffer.byteLength(value) > MAX_IDENT_LEN) throw fieldError(key, `is longer than ${MAX_IDENT_LEN} bytes`);
    if (WHITESPACE_OR_CONTROL.test(value)) throw fieldError(key, 'must not contain whitespace or control characters');
    if (key === 's' && Buffer.byteLength(value) < MIN_SECRET_LEN) {
      throw fieldError(key, `is shorter than ${MIN_SECRET_LEN} bytes: generate one with \`remoteingress-bin secret new\``);
    }
    return value;
  }) as [string, string];
  const data: IConnectionTokenData = { hubHost, hubPort, edgeId, secret };
  if (input['f'] !== undefined && input['f'] !== null) {
    const fingerprint = text('f', input['f']);
    if (!/^[0-9a-fA-F]{64}$/.test(fingerprint)) throw fieldError('f', "must be 64 hex digits, no ':'");
    data.hubCertSha256 = fingerprint.toLowerCase();
  }
  const unknown = Object.keys(input).find((key) => !(key in FIELDS));
  if (unknown !== undefined) {
    throw new ConnectionTokenError('json', `token has an unknown field ${JSON.stringify(unknown.slice(0, 40))}`);
  }
  return data;
}

/** Encodes connection details into a token, validating them first (a token that encodes decodes). */
export function encodeConnectionToken(data: IConnectionTokenData): string {
  const { hubHost: h, hubPort: p, edgeId: e, secret: s, hubCertSha256: f } = data;
  const checked = validate({ h, p, e, s, f });
  // Key order h, p, e, s, f as Rust writes it; JSON.stringify drops an undefined `f`. UTF-8,
  // never btoa (which cannot encode non-ASCII ids and secrets).
  const json = JSON.stringify({ h, p, e, s, f: checked.hubCertSha256 });
  return Buffer.from(json, 'utf8').toString('base64url');
}

/**
 * Decodes and validates a token: surrounding whitespace is trimmed, canonical `=` padding is
 * accepted, and anything else that is not exact base64url (`+`, `/`, a cut or altered last
 * character), invalid UTF-8, unknown or missing keys and bad field values are refused.
 */
export function decodeConnectionToken(token: string): IConnectionTokenData {
  const trimmed = typeof token === 'string' ? token.trim() : '';
  if (trimmed.length === 0) throw new ConnectionTokenError('encoding', 'connection token is empty');
  if (trimmed.length > MAX_TOKEN_LEN) {
    throw new ConnectionTokenError('encoding', `connection token is longer than ${MAX_TOKEN_LEN} bytes`);
  }
  const body = trimmed.replace(/={1,2}$/, '');
  const bytes = Buffer.from(body, 'base64url');
  // Buffer skips what it cannot read; exact base64url is what encodes back to the same text.
  const padded = body.length === trimmed.length || trimmed.length % 4 === 0;
  if (!/^[A-Za-z0-9_-]*$/.test(body) || !padded || bytes.toString('base64url') !== body) {
    throw new ConnectionTokenError(
      'encoding',
      'connection token is not base64url (alphabet A-Z a-z 0-9 - _; truncated or altered?)',
    );
  }
  let input: unknown;
  try {
    input = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    // Only the position: V8's messages quote the text around it, which may be the secret.
    const at = /position \d+/.exec((error as Error).message)?.[0];
    throw new ConnectionTokenError('json', `decoded connection token is not UTF-8 JSON${at ? ` (at ${at})` : ''}`);
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConnectionTokenError('json', 'decoded connection token is not a JSON object');
  }
  return validate(input as Record<string, unknown>);
}
