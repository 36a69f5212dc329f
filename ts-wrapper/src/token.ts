// Connection tokens: one opaque string with everything an edge needs to reach its hub.
//
// A token is base64url (RFC 4648 §5) without padding of the compact JSON
// `{"h":hubHost,"p":hubPort,"e":edgeId,"s":secret,"f"?:sha256hex}`, keys in that order, `f` left
// out when there is no pinned hub certificate. This module mirrors engine/src/token.rs rule for
// rule and message for message: the same input gives the same token in both languages, and a
// token one side refuses, the other refuses with the same words. No message contains the secret
// or the token.

import { rustDebugChar, rustDebugStr, serdeJsonFloat } from './internal/rust-format.js';
import {
  parseSerdeDocument,
  SerdeJsonError,
  utf8ValidUpTo,
  type SerdeNumber,
  type SerdeValue,
} from './internal/serde-json.js';

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

/** Longest accepted token, in bytes after trimming (as on the Rust side). */
export const MAX_TOKEN_LEN = 8 * 1024;
/** Longest accepted hub host, in bytes: the longest DNS name. */
export const MAX_HUB_HOST_LEN = 253;
/** Longest accepted edge id or secret, in bytes. */
export const MAX_IDENT_LEN = 1024;
const CERT_SHA256_HEX_LEN = 64;
const MAX_QUOTED_KEY_CHARS = 40;

type TokenField = 'h' | 'p' | 'e' | 's' | 'f';

const FIELD_DESCRIPTIONS: Record<TokenField, string> = {
  h: 'hub host',
  p: 'hub port',
  e: 'edge id',
  s: 'secret',
  f: 'hub certificate fingerprint',
};

/** Reads as `the hub host (field "h")`, like the Rust `TokenField` Display. */
function fieldName(field: TokenField): string {
  return `the ${FIELD_DESCRIPTIONS[field]} (field "${field}")`;
}

/** What went wrong, one value per Rust `TokenError` variant (and `IdentError` inside it). */
export type TConnectionTokenErrorKind =
  | 'empty'
  | 'tooLong'
  | 'invalidCharacter'
  | 'invalidLength'
  | 'invalidLastCharacter'
  | 'invalidPadding'
  | 'notUtf8'
  | 'json'
  | 'notAnObject'
  | 'missingField'
  | 'duplicateField'
  | 'unknownField'
  | 'wrongType'
  | 'portOutOfRange'
  | 'hubHostEmpty'
  | 'hubHostTooLong'
  | 'hubHostBadCharacter'
  | 'hubHostNotAscii'
  | 'edgeId'
  | 'secret'
  | 'certSha256Length'
  | 'certSha256NotHex'
  | 'notWellFormed';

/** A token that cannot be decoded, or data that cannot be encoded. Never quotes the secret. */
export class ConnectionTokenError extends Error {
  readonly kind: TConnectionTokenErrorKind;

  constructor(kind: TConnectionTokenErrorKind, message: string) {
    super(message);
    this.name = 'ConnectionTokenError';
    this.kind = kind;
  }
}

const WHITESPACE_OR_CONTROL = /[\p{White_Space}\p{Cc}]/u;
const EDGE_WHITESPACE = /^\p{White_Space}+|\p{White_Space}+$/gu;

function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

function jsKind(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  switch (typeof value) {
    case 'boolean':
      return 'a boolean';
    case 'number':
    case 'bigint':
      return 'a number';
    case 'string':
      return 'a string';
    default:
      return 'an object';
  }
}

function serdeKind(value: SerdeValue): string {
  switch (value.kind) {
    case 'null':
      return 'null';
    case 'bool':
      return 'a boolean';
    case 'number':
      return 'a number';
    case 'string':
      return 'a string';
    case 'array':
      return 'an array';
    case 'object':
      return 'an object';
  }
}

function wrongType(field: TokenField, expected: string, found: string): ConnectionTokenError {
  return new ConnectionTokenError(
    'wrongType',
    `${fieldName(field)} must be a JSON ${expected}, found ${found}`,
  );
}

function missing(field: TokenField): ConnectionTokenError {
  return new ConnectionTokenError('missingField', `token is missing ${fieldName(field)}`);
}

function portOutOfRange(got: string): ConnectionTokenError {
  return new ConnectionTokenError('portOutOfRange', `hub port must be 1..65535 (field "p" is ${got})`);
}

/** JavaScript strings may hold lone surrogates, which neither UTF-8 nor Rust can carry. */
function requireWellFormed(field: TokenField, value: string): void {
  if (!value.isWellFormed()) {
    throw new ConnectionTokenError(
      'notWellFormed',
      `${fieldName(field)} is not valid Unicode (it contains a lone surrogate)`,
    );
  }
}

function validateHubHost(host: string): void {
  requireWellFormed('h', host);
  if (host.length === 0) {
    throw new ConnectionTokenError('hubHostEmpty', `${fieldName('h')} must not be empty`);
  }
  const length = byteLength(host);
  if (length > MAX_HUB_HOST_LEN) {
    throw new ConnectionTokenError(
      'hubHostTooLong',
      `${fieldName('h')} is ${length} bytes long, more than ${MAX_HUB_HOST_LEN}`,
    );
  }
  if (WHITESPACE_OR_CONTROL.test(host)) {
    throw new ConnectionTokenError(
      'hubHostBadCharacter',
      `${fieldName('h')} must not contain whitespace or control characters`,
    );
  }
  if (!/^[\x00-\x7f]*$/.test(host)) {
    throw new ConnectionTokenError(
      'hubHostNotAscii',
      `${fieldName('h')} must be ASCII; write an international name in its punycode (xn--) form`,
    );
  }
}

/** engine/src/ident.rs: non-empty, at most 1024 bytes, no whitespace or control characters. */
function validateIdent(field: 'e' | 's', value: string): void {
  requireWellFormed(field, value);
  const what = field === 'e' ? 'edge id' : 'secret';
  const kind = field === 'e' ? 'edgeId' : 'secret';
  let problem: string | undefined;
  if (value.length === 0) problem = `${what} must not be empty`;
  else if (byteLength(value) > MAX_IDENT_LEN) problem = `${what} is longer than ${MAX_IDENT_LEN} bytes`;
  else if (WHITESPACE_OR_CONTROL.test(value)) {
    problem = `${what} must not contain whitespace or control characters`;
  }
  if (problem !== undefined) {
    throw new ConnectionTokenError(kind, `token field "${field}": ${problem}`);
  }
}

/** 64 hex digits, either case; characters are checked before the length (colon hint). */
function validateCertSha256(fingerprint: string): void {
  requireWellFormed('f', fingerprint);
  let offset = 0;
  for (const char of fingerprint) {
    if (!/^[0-9a-fA-F]$/.test(char)) {
      const hint = char === ':' ? " (write it without ':' separators)" : '';
      throw new ConnectionTokenError(
        'certSha256NotHex',
        `${fieldName('f')} must be hex digits only, found ${rustDebugChar(char)} at offset ${offset}${hint}`,
      );
    }
    offset += byteLength(char);
  }
  if (fingerprint.length !== CERT_SHA256_HEX_LEN) {
    throw new ConnectionTokenError(
      'certSha256Length',
      `${fieldName('f')} must be ${CERT_SHA256_HEX_LEN} hex digits (a SHA-256 digest), found ${fingerprint.length} characters`,
    );
  }
}

function validatePort(port: unknown): number {
  if (port === undefined) throw missing('p');
  if (typeof port !== 'number') throw wrongType('p', 'number', jsKind(port));
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw portOutOfRange(Number.isInteger(port) ? String(port) : serdeJsonFloat(port));
  }
  return port;
}

function requireString(field: TokenField, value: unknown): string {
  if (value === undefined) throw missing(field);
  if (typeof value !== 'string') throw wrongType(field, 'string', jsKind(value));
  return value;
}

/**
 * Encodes connection details into a token, byte-identical to `remoteingress-bin token encode`.
 * Validates every field first (as decoding would), so a token that encodes also decodes. The
 * fingerprint is written lower-case.
 */
export function encodeConnectionToken(data: IConnectionTokenData): string {
  const input = data as unknown as Record<string, unknown>;
  const hubHost = requireString('h', input['hubHost']);
  validateHubHost(hubHost);
  const hubPort = validatePort(input['hubPort']);
  const edgeId = requireString('e', input['edgeId']);
  validateIdent('e', edgeId);
  const secret = requireString('s', input['secret']);
  validateIdent('s', secret);
  const rawFingerprint = input['hubCertSha256'];
  let fingerprint: string | undefined;
  if (rawFingerprint !== undefined && rawFingerprint !== null) {
    fingerprint = requireString('f', rawFingerprint);
    validateCertSha256(fingerprint);
    fingerprint = fingerprint.toLowerCase();
  }
  // JSON.stringify escapes exactly what the Rust encoder escapes and keeps insertion order; it
  // drops `f` when undefined. UTF-8, never btoa (which cannot encode non-ASCII ids and secrets).
  const json = JSON.stringify({ h: hubHost, p: hubPort, e: edgeId, s: secret, f: fingerprint });
  return Buffer.from(json, 'utf8').toString('base64url');
}

function isBase64UrlChar(char: string): boolean {
  return /^[A-Za-z0-9_-]$/.test(char);
}

const BASE64URL_VALUES = new Map<string, number>(
  [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'].map((c, i) => [c, i]),
);

/** Decodes unpadded base64url as Rust's base64 crate (URL_SAFE_NO_PAD) does, with its errors. */
function decodeBase64Url(text: string): Uint8Array {
  if (text.length % 4 === 1) {
    throw new ConnectionTokenError(
      'invalidLength',
      `connection token is not valid base64url: ${text.length} characters cannot be a complete encoding (truncated token?)`,
    );
  }
  const rest = text.length % 4;
  if (rest !== 0) {
    // The bits of the last character beyond the final whole byte must be zero.
    const last = text[text.length - 1] as string;
    const value = BASE64URL_VALUES.get(last) ?? 0;
    const unusedBits = rest === 2 ? 4 : 2;
    if ((value & ((1 << unusedBits) - 1)) !== 0) {
      throw new ConnectionTokenError(
        'invalidLastCharacter',
        `connection token is not valid base64url: its last character ${rustDebugChar(last)} at offset ${text.length - 1} has bits that decode to nothing (truncated or altered token?)`,
      );
    }
  }
  return Buffer.from(text, 'base64url');
}

function serdeNumberText(number: SerdeNumber): string {
  return number.kind === 'float' ? serdeJsonFloat(number.value) : number.value.toString();
}

/**
 * Decodes and validates a token, with the rules (and messages) of engine/src/token.rs:
 * surrounding whitespace is trimmed; canonical `=` padding is accepted; the JSON may have any key
 * order, but unknown keys, duplicate keys, `null`s and wrong types are refused; the port must be
 * an integer 1..65535; the fingerprint, in either case, is returned lower-case.
 */
export function decodeConnectionToken(token: string): IConnectionTokenData {
  if (typeof token !== 'string') {
    throw new ConnectionTokenError('empty', `connection token must be a string, found ${jsKind(token)}`);
  }
  const trimmed = token.replace(EDGE_WHITESPACE, '');
  if (trimmed.length === 0) throw new ConnectionTokenError('empty', 'connection token is empty');
  const length = byteLength(trimmed);
  if (length > MAX_TOKEN_LEN) {
    throw new ConnectionTokenError(
      'tooLong',
      `connection token is ${length} bytes long, more than the limit of ${MAX_TOKEN_LEN}`,
    );
  }
  // The first character that cannot stand where it is: outside the URL-safe alphabet, or an `=`
  // before the trailing run of padding. Offsets are in bytes, as on the Rust side.
  const unpadded = trimmed.replace(/=+$/, '');
  let offset = 0;
  for (const char of trimmed) {
    const paddingHere = char === '=' && offset >= unpadded.length;
    if (!isBase64UrlChar(char) && !paddingHere) {
      const hint = char === '+' || char === '/' ? " (tokens use the URL-safe alphabet, with '-' and '_')" : '';
      throw new ConnectionTokenError(
        'invalidCharacter',
        `connection token is not valid base64url: unexpected character ${rustDebugChar(char)} at offset ${offset}${hint}`,
      );
    }
    offset += byteLength(char);
  }
  const padding = trimmed.length - unpadded.length;
  const canonical = unpadded.length % 4 === 2 ? 2 : unpadded.length % 4 === 3 ? 1 : 0;
  if (padding !== 0 && padding !== canonical) {
    throw new ConnectionTokenError('invalidPadding', "connection token has malformed '=' padding");
  }
  const bytes = decodeBase64Url(unpadded);
  const badUtf8 = utf8ValidUpTo(bytes);
  if (badUtf8 !== undefined) {
    throw new ConnectionTokenError(
      'notUtf8',
      `decoded connection token is not UTF-8 (invalid byte at offset ${badUtf8})`,
    );
  }
  let document;
  try {
    document = parseSerdeDocument(bytes);
  } catch (error) {
    if (error instanceof SerdeJsonError) {
      throw new ConnectionTokenError('json', `decoded connection token is not valid JSON: ${error.message}`);
    }
    throw error;
  }
  if (document.kind !== 'object') {
    throw new ConnectionTokenError(
      'notAnObject',
      `decoded connection token is ${serdeKind(document.value)}, not a JSON object`,
    );
  }
  const fields = new Map<TokenField, SerdeValue>();
  for (const [key, value] of document.entries) {
    if (!['h', 'p', 'e', 's', 'f'].includes(key)) {
      const quoted = rustDebugStr([...key].slice(0, MAX_QUOTED_KEY_CHARS).join(''));
      throw new ConnectionTokenError(
        'unknownField',
        `token has an unknown field ${quoted} (known fields: h, p, e, s, f)`,
      );
    }
    const field = key as TokenField;
    if (fields.has(field)) {
      throw new ConnectionTokenError('duplicateField', `token has ${fieldName(field)} more than once`);
    }
    fields.set(field, value);
  }
  const string = (field: TokenField): string => {
    const value = fields.get(field);
    if (value === undefined) throw missing(field);
    if (value.kind !== 'string') throw wrongType(field, 'string', serdeKind(value));
    return value.value;
  };
  // Checked in key order, so the first problem is the one reported.
  const hubHost = string('h');
  validateHubHost(hubHost);
  const port = fields.get('p');
  if (port === undefined) throw missing('p');
  if (port.kind !== 'number') throw wrongType('p', 'number', serdeKind(port));
  const number = port.number;
  if (number.kind !== 'posInt' || number.value < 1n || number.value > 65535n) {
    throw portOutOfRange(serdeNumberText(number));
  }
  const edgeId = string('e');
  validateIdent('e', edgeId);
  const secret = string('s');
  validateIdent('s', secret);
  const decoded: IConnectionTokenData = { hubHost, hubPort: Number(number.value), edgeId, secret };
  if (fields.has('f')) {
    const fingerprint = string('f');
    validateCertSha256(fingerprint);
    decoded.hubCertSha256 = fingerprint.toLowerCase();
  }
  return decoded;
}
