// A strict JSON reader that fails exactly where, and with the message, serde_json (1.0) does.
//
// Connection tokens are decoded by the Rust side with serde_json; this port of its
// `Deserializer` (de.rs / read.rs, `from_str`) lets `decodeConnectionToken` report the same
// "<problem> at line L column C" messages. Columns count bytes, as serde_json's do. Only the
// top-level object's entries are kept (duplicates included, in order); nested values are checked
// and reduced to their kind.

export type SerdeNumber =
  | { readonly kind: 'posInt'; readonly value: bigint }
  | { readonly kind: 'negInt'; readonly value: bigint }
  | { readonly kind: 'float'; readonly value: number };

export type SerdeValue =
  | { readonly kind: 'null' }
  | { readonly kind: 'bool' }
  | { readonly kind: 'number'; readonly number: SerdeNumber }
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'array' }
  | { readonly kind: 'object' };

/** The top level: an object's entries in order (duplicates kept), or another kind of value. */
export type SerdeDocument =
  | { readonly kind: 'object'; readonly entries: ReadonlyArray<readonly [string, SerdeValue]> }
  | { readonly kind: 'other'; readonly value: SerdeValue };

export class SerdeJsonError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SerdeJsonError';
  }
}

const enum Byte {
  Tab = 0x09,
  Newline = 0x0a,
  Return = 0x0d,
  Space = 0x20,
  Quote = 0x22,
  Plus = 0x2b,
  Comma = 0x2c,
  Minus = 0x2d,
  Dot = 0x2e,
  Slash = 0x2f,
  Zero = 0x30,
  Nine = 0x39,
  Colon = 0x3a,
  UpperE = 0x45,
  OpenBracket = 0x5b,
  Backslash = 0x5c,
  CloseBracket = 0x5d,
  LowerB = 0x62,
  LowerE = 0x65,
  LowerF = 0x66,
  LowerN = 0x6e,
  LowerR = 0x72,
  LowerT = 0x74,
  LowerU = 0x75,
  OpenBrace = 0x7b,
  CloseBrace = 0x7d,
}

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN_MAGNITUDE = 1n << 63n;
const I32_MAX = 2147483647;
const RECURSION_LIMIT = 128;
const utf8 = new TextDecoder('utf-8');

function isDigit(byte: number | undefined): byte is number {
  return byte !== undefined && byte >= Byte.Zero && byte <= Byte.Nine;
}

function hexValue(byte: number | undefined): number | undefined {
  if (byte === undefined) return undefined;
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x41 + 10;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x61 + 10;
  return undefined;
}

class Reader {
  private index = 0;
  private remainingDepth = RECURSION_LIMIT;

  constructor(private readonly bytes: Uint8Array) {}

  document(): SerdeDocument {
    const peek = this.whitespace();
    let document: SerdeDocument;
    if (peek === Byte.OpenBrace) {
      document = { kind: 'object', entries: this.object(true) };
    } else if (peek === Byte.OpenBracket) {
      // The token decoder visits a top-level array with `IgnoredAny` elements.
      this.array(true);
      document = { kind: 'other', value: { kind: 'array' } };
    } else {
      document = { kind: 'other', value: this.value() };
    }
    if (this.whitespace() !== undefined) throw this.peekError('trailing characters');
    return document;
  }

  // --- position and errors (serde_json's `error` / `peek_error`) ---

  private fail(message: string, index: number): SerdeJsonError {
    let startOfLine = 0;
    let line = 1;
    for (let i = 0; i < index; i += 1) {
      if (this.bytes[i] === Byte.Newline) {
        line += 1;
        startOfLine = i + 1;
      }
    }
    return new SerdeJsonError(`${message} at line ${line} column ${index - startOfLine}`);
  }

  private error(message: string): SerdeJsonError {
    return this.fail(message, this.index);
  }

  private peekError(message: string): SerdeJsonError {
    return this.fail(message, Math.min(this.bytes.length, this.index + 1));
  }

  private peek(): number | undefined {
    return this.bytes[this.index];
  }

  private next(): number | undefined {
    const byte = this.bytes[this.index];
    if (byte !== undefined) this.index += 1;
    return byte;
  }

  private whitespace(): number | undefined {
    for (;;) {
      const byte = this.peek();
      if (byte === Byte.Space || byte === Byte.Newline || byte === Byte.Tab || byte === Byte.Return) {
        this.index += 1;
      } else {
        return byte;
      }
    }
  }

  // --- values (deserialize_any) ---

  private value(): SerdeValue {
    const peek = this.whitespace();
    switch (peek) {
      case undefined:
        throw this.peekError('EOF while parsing a value');
      case Byte.LowerN:
        this.index += 1;
        this.ident('ull');
        return { kind: 'null' };
      case Byte.LowerT:
        this.index += 1;
        this.ident('rue');
        return { kind: 'bool' };
      case Byte.LowerF:
        this.index += 1;
        this.ident('alse');
        return { kind: 'bool' };
      case Byte.Minus:
        this.index += 1;
        return { kind: 'number', number: this.number(false) };
      case Byte.Quote:
        this.index += 1;
        return { kind: 'string', value: this.string() };
      case Byte.OpenBracket:
        this.array();
        return { kind: 'array' };
      case Byte.OpenBrace:
        this.object(false);
        return { kind: 'object' };
      default:
        if (isDigit(peek)) return { kind: 'number', number: this.number(true) };
        throw this.peekError('expected value');
    }
  }

  private enter(): void {
    this.remainingDepth -= 1;
    if (this.remainingDepth === 0) throw this.peekError('recursion limit exceeded');
  }

  private ident(rest: string): void {
    for (let i = 0; i < rest.length; i += 1) {
      const byte = this.next();
      if (byte === undefined) throw this.error('EOF while parsing a value');
      if (byte !== rest.charCodeAt(i)) throw this.error('expected ident');
    }
  }

  private array(ignoreElements = false): void {
    this.enter();
    this.index += 1;
    let first = true;
    for (;;) {
      const peek = this.whitespace();
      if (peek === undefined) throw this.peekError('EOF while parsing a list');
      if (peek === Byte.CloseBracket) break;
      if (first) {
        first = false;
      } else if (peek === Byte.Comma) {
        this.index += 1;
        const after = this.whitespace();
        if (after === Byte.CloseBracket) throw this.peekError('trailing comma');
        if (after === undefined) throw this.peekError('EOF while parsing a value');
      } else {
        throw this.peekError('expected `,` or `]`');
      }
      if (ignoreElements) this.ignoreValue();
      else this.value();
    }
    this.index += 1; // the `]` seen above
    this.remainingDepth += 1;
  }

  private object(keep: boolean): Array<readonly [string, SerdeValue]> {
    this.enter();
    this.index += 1;
    const entries: Array<readonly [string, SerdeValue]> = [];
    let first = true;
    for (;;) {
      const peek = this.whitespace();
      if (peek === undefined) throw this.peekError('EOF while parsing an object');
      if (peek === Byte.CloseBrace) break;
      if (first) {
        first = false;
        if (peek !== Byte.Quote) throw this.peekError('key must be a string');
      } else if (peek === Byte.Comma) {
        this.index += 1;
        const after = this.whitespace();
        if (after === Byte.CloseBrace) throw this.peekError('trailing comma');
        if (after === undefined) throw this.peekError('EOF while parsing a value');
        if (after !== Byte.Quote) throw this.peekError('key must be a string');
      } else {
        throw this.peekError('expected `,` or `}`');
      }
      this.index += 1; // the key's opening quote
      const key = this.string();
      const colon = this.whitespace();
      if (colon === undefined) throw this.peekError('EOF while parsing an object');
      if (colon !== Byte.Colon) throw this.peekError('expected `:`');
      this.index += 1;
      const value = this.value();
      if (keep) entries.push([key, value]);
    }
    this.index += 1; // the `}` seen above
    this.remainingDepth += 1;
    return entries;
  }

  // --- ignored values (ignore_value: no recursion limit, no number or surrogate checks) ---

  private nextOrNull(): number {
    return this.next() ?? 0;
  }

  private ignoreValue(): void {
    const frames: number[] = [];
    let enclosing: number | undefined;
    for (;;) {
      const peek = this.whitespace();
      if (peek === undefined) throw this.peekError('EOF while parsing a value');
      let opened: number | undefined;
      if (peek === Byte.LowerN) {
        this.index += 1;
        this.ident('ull');
      } else if (peek === Byte.LowerT) {
        this.index += 1;
        this.ident('rue');
      } else if (peek === Byte.LowerF) {
        this.index += 1;
        this.ident('alse');
      } else if (peek === Byte.Minus) {
        this.index += 1;
        this.ignoreNumber();
      } else if (isDigit(peek)) {
        this.ignoreNumber();
      } else if (peek === Byte.Quote) {
        this.index += 1;
        this.ignoreString();
      } else if (peek === Byte.OpenBracket || peek === Byte.OpenBrace) {
        if (enclosing !== undefined) frames.push(enclosing);
        enclosing = undefined;
        this.index += 1;
        opened = peek;
      } else {
        throw this.peekError('expected value');
      }

      let acceptComma: boolean;
      let frame: number;
      if (opened !== undefined) {
        acceptComma = false;
        frame = opened;
      } else if (enclosing !== undefined) {
        acceptComma = true;
        frame = enclosing;
        enclosing = undefined;
      } else {
        const popped = frames.pop();
        if (popped === undefined) return;
        acceptComma = true;
        frame = popped;
      }

      for (;;) {
        const next = this.whitespace();
        if (next === Byte.Comma && acceptComma) {
          this.index += 1;
          break;
        }
        const closes =
          (next === Byte.CloseBracket && frame === Byte.OpenBracket) ||
          (next === Byte.CloseBrace && frame === Byte.OpenBrace);
        if (!closes) {
          if (next === undefined) {
            throw this.peekError(frame === Byte.OpenBracket ? 'EOF while parsing a list' : 'EOF while parsing an object');
          }
          if (acceptComma) {
            throw this.peekError(frame === Byte.OpenBracket ? 'expected `,` or `]`' : 'expected `,` or `}`');
          }
          break;
        }
        this.index += 1;
        const popped = frames.pop();
        if (popped === undefined) return;
        frame = popped;
        acceptComma = true;
      }

      if (frame === Byte.OpenBrace) {
        const quote = this.whitespace();
        if (quote === undefined) throw this.peekError('EOF while parsing an object');
        if (quote !== Byte.Quote) throw this.peekError('key must be a string');
        this.index += 1;
        this.ignoreString();
        const colon = this.whitespace();
        if (colon === undefined) throw this.peekError('EOF while parsing an object');
        if (colon !== Byte.Colon) throw this.peekError('expected `:`');
        this.index += 1;
      }
      enclosing = frame;
    }
  }

  private ignoreNumber(): void {
    const first = this.nextOrNull();
    if (first === Byte.Zero) {
      if (isDigit(this.peek())) throw this.peekError('invalid number');
    } else if (isDigit(first)) {
      while (isDigit(this.peek())) this.index += 1;
    } else {
      throw this.error('invalid number');
    }
    if (this.peek() === Byte.Dot) {
      this.index += 1;
      let digits = false;
      while (isDigit(this.peek())) {
        this.index += 1;
        digits = true;
      }
      if (!digits) throw this.peekError('invalid number');
    }
    const marker = this.peek();
    if (marker === Byte.LowerE || marker === Byte.UpperE) {
      this.index += 1;
      const sign = this.peek();
      if (sign === Byte.Plus || sign === Byte.Minus) this.index += 1;
      if (!isDigit(this.nextOrNull())) throw this.error('invalid number');
      while (isDigit(this.peek())) this.index += 1;
    }
  }

  private ignoreString(): void {
    for (;;) {
      const byte = this.bytes[this.index];
      if (byte === undefined) throw this.error('EOF while parsing a string');
      if (byte === Byte.Quote) {
        this.index += 1;
        return;
      }
      if (byte === Byte.Backslash) {
        this.index += 1;
        const escape = this.next();
        if (escape === undefined) throw this.error('EOF while parsing a string');
        if (escape === Byte.LowerU) this.hexEscape();
        else if (![Byte.Quote, Byte.Backslash, Byte.Slash, Byte.LowerB, Byte.LowerF, Byte.LowerN, Byte.LowerR, Byte.LowerT].includes(escape)) {
          throw this.error('invalid escape');
        }
      } else if (byte < 0x20) {
        throw this.error('control character (\\u0000-\\u001F) found while parsing a string');
      } else {
        this.index += 1;
      }
    }
  }

  // --- numbers (parse_integer / parse_number / parse_decimal / parse_exponent) ---

  private number(positive: boolean): SerdeNumber {
    const first = this.next();
    if (first === undefined) throw this.error('EOF while parsing a value');
    let significand = 0n;
    let digits = '';
    if (first === Byte.Zero) {
      if (isDigit(this.peek())) throw this.peekError('invalid number');
    } else if (isDigit(first)) {
      significand = BigInt(first - Byte.Zero);
      while (isDigit(this.peek())) {
        significand = significand * 10n + BigInt((this.peek() as number) - Byte.Zero);
        this.index += 1;
      }
    } else {
      throw this.error('invalid number');
    }
    digits = significand.toString();
    const peek = this.peek();
    if (peek === Byte.Dot || peek === Byte.LowerE || peek === Byte.UpperE) {
      return { kind: 'float', value: this.float(positive, digits) };
    }
    if (significand > U64_MAX) {
      return { kind: 'float', value: this.finite(Number(`${positive ? '' : '-'}${digits}`)) };
    }
    if (positive) return { kind: 'posInt', value: significand };
    if (significand === 0n || significand > I64_MIN_MAGNITUDE) {
      return { kind: 'float', value: -Number(significand) };
    }
    return { kind: 'negInt', value: -significand };
  }

  private float(positive: boolean, integerDigits: string): number {
    let text = `${positive ? '' : '-'}${integerDigits}`;
    let zeroSignificand = /^0*$/.test(integerDigits);
    if (this.peek() === Byte.Dot) {
      this.index += 1;
      let fraction = '';
      while (isDigit(this.peek())) {
        fraction += String.fromCharCode(this.peek() as number);
        this.index += 1;
      }
      if (fraction === '') {
        if (this.peek() !== undefined) throw this.peekError('invalid number');
        throw this.peekError('EOF while parsing a value');
      }
      zeroSignificand &&= /^0*$/.test(fraction);
      text += `.${fraction}`;
    }
    const marker = this.peek();
    if (marker === Byte.LowerE || marker === Byte.UpperE) {
      this.index += 1;
      let positiveExponent = true;
      const sign = this.peek();
      if (sign === Byte.Plus || sign === Byte.Minus) {
        positiveExponent = sign === Byte.Plus;
        this.index += 1;
      }
      const first = this.next();
      if (first === undefined) throw this.error('EOF while parsing a value');
      if (!isDigit(first)) throw this.error('invalid number');
      let exponent = first - Byte.Zero;
      let overflowed = false;
      while (isDigit(this.peek())) {
        const digit = (this.peek() as number) - Byte.Zero;
        this.index += 1;
        if (!overflowed && exponent > (I32_MAX - digit) / 10) {
          if (!zeroSignificand && positiveExponent) throw this.error('number out of range');
          overflowed = true;
        }
        if (!overflowed) exponent = exponent * 10 + digit;
      }
      if (overflowed) return positive ? 0 : -0;
      text += `e${positiveExponent ? '' : '-'}${exponent}`;
    }
    return this.finite(Number(text));
  }

  private finite(value: number): number {
    if (!Number.isFinite(value)) throw this.error('number out of range');
    return value;
  }

  // --- strings (parse_str_bytes / parse_escape / parse_unicode_escape) ---

  private string(): string {
    const out: number[] = [];
    for (;;) {
      const byte = this.bytes[this.index];
      if (byte === undefined) throw this.error('EOF while parsing a string');
      this.index += 1;
      if (byte === Byte.Quote) return utf8.decode(Uint8Array.from(out));
      if (byte === Byte.Backslash) {
        this.escape(out);
      } else if (byte < 0x20) {
        throw this.error('control character (\\u0000-\\u001F) found while parsing a string');
      } else {
        out.push(byte);
      }
    }
  }

  private escape(out: number[]): void {
    const byte = this.next();
    if (byte === undefined) throw this.error('EOF while parsing a string');
    switch (byte) {
      case Byte.Quote:
      case Byte.Backslash:
      case Byte.Slash:
        out.push(byte);
        return;
      case Byte.LowerB:
        out.push(0x08);
        return;
      case Byte.LowerF:
        out.push(0x0c);
        return;
      case Byte.LowerN:
        out.push(0x0a);
        return;
      case Byte.LowerR:
        out.push(0x0d);
        return;
      case Byte.LowerT:
        out.push(0x09);
        return;
      case Byte.LowerU:
        this.unicodeEscape(out);
        return;
      default:
        throw this.error('invalid escape');
    }
  }

  private hexEscape(): number {
    if (this.bytes.length - this.index < 4) {
      this.index = this.bytes.length;
      throw this.error('EOF while parsing a string');
    }
    let value = 0;
    let valid = true;
    for (let i = 0; i < 4; i += 1) {
      const digit = hexValue(this.bytes[this.index + i]);
      if (digit === undefined) valid = false;
      else value = value * 16 + digit;
    }
    this.index += 4;
    if (!valid) throw this.error('invalid escape');
    return value;
  }

  private unicodeEscape(out: number[]): void {
    const n = this.hexEscape();
    if (n >= 0xdc00 && n <= 0xdfff) throw this.error('lone leading surrogate in hex escape');
    let codePoint = n;
    if (n >= 0xd800 && n <= 0xdbff) {
      for (const expected of [Byte.Backslash, Byte.LowerU]) {
        const peek = this.peek();
        if (peek === undefined) throw this.error('EOF while parsing a string');
        this.index += 1;
        if (peek !== expected) throw this.error('unexpected end of hex escape');
      }
      const n2 = this.hexEscape();
      if (n2 < 0xdc00 || n2 > 0xdfff) throw this.error('lone leading surrogate in hex escape');
      codePoint = (((n - 0xd800) << 10) | (n2 - 0xdc00)) + 0x10000;
    }
    out.push(...Buffer.from(String.fromCodePoint(codePoint), 'utf8'));
  }
}

/** Parses `bytes` (valid UTF-8) as serde_json's `from_str` would; throws `SerdeJsonError`. */
export function parseSerdeDocument(bytes: Uint8Array): SerdeDocument {
  return new Reader(bytes).document();
}

/** The offset of the first byte that is not valid UTF-8 (Rust's `Utf8Error::valid_up_to`). */
export function utf8ValidUpTo(bytes: Uint8Array): number | undefined {
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i] as number;
    if (b0 < 0x80) {
      i += 1;
      continue;
    }
    let width: number;
    let lower = 0x80;
    let upper = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
      width = 2;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      width = 3;
      if (b0 === 0xe0) lower = 0xa0;
      if (b0 === 0xed) upper = 0x9f;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      width = 4;
      if (b0 === 0xf0) lower = 0x90;
      if (b0 === 0xf4) upper = 0x8f;
    } else {
      return i;
    }
    for (let k = 1; k < width; k += 1) {
      const b = bytes[i + k];
      const lo = k === 1 ? lower : 0x80;
      const hi = k === 1 ? upper : 0xbf;
      if (b === undefined || b < lo || b > hi) return i;
    }
    i += width;
  }
  return undefined;
}
