// Formatting helpers that reproduce what the Rust side prints, so token errors read the same in
// both languages (engine/src/token.rs quotes characters with `{:?}` and numbers with serde_json).

const NON_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;
const GRAPHEME_EXTEND = /\p{Grapheme_Extend}/u;

function escapeChar(char: string, quote: "'" | '"'): string {
  switch (char) {
    case '\0':
      return '\\0';
    case '\t':
      return '\\t';
    case '\r':
      return '\\r';
    case '\n':
      return '\\n';
    case '\\':
      return '\\\\';
    case "'":
      return quote === "'" ? "\\'" : "'";
    case '"':
      return quote === '"' ? '\\"' : '"';
    case ' ':
      return ' ';
    default:
      if (GRAPHEME_EXTEND.test(char) || NON_PRINTABLE.test(char)) {
        return `\\u{${(char.codePointAt(0) ?? 0).toString(16)}}`;
      }
      return char;
  }
}

/** Rust's `format!("{:?}", c)` for a `char` (one code point). */
export function rustDebugChar(char: string): string {
  return `'${escapeChar(char, "'")}'`;
}

/** Rust's `format!("{:?}", s)` for a `&str`. */
export function rustDebugStr(text: string): string {
  let out = '"';
  for (const char of text) out += escapeChar(char, '"');
  return `${out}"`;
}

/**
 * serde_json's `Display` of a float `Number` (ryu's shortest representation, with `.0` on
 * integral values and `e+N`/`e-N` exponents outside ryu's decimal range).
 */
export function serdeJsonFloat(value: number): string {
  if (Object.is(value, -0)) return '-0.0';
  if (value === 0) return '0.0';
  const sign = value < 0 ? '-' : '';
  // toExponential() without an argument yields the shortest round-trip digits, as ryu does.
  const [mantissa = '0', exp = '0'] = Math.abs(value).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const length = digits.length;
  const kk = Number(exp) + 1; // 10^(kk-1) <= |value| < 10^kk
  const k = kk - length;
  let body: string;
  if (k >= 0 && kk <= 16) {
    body = `${digits}${'0'.repeat(k)}.0`;
  } else if (kk > 0 && kk <= 16) {
    body = `${digits.slice(0, kk)}.${digits.slice(kk)}`;
  } else if (kk > -5 && kk <= 0) {
    body = `0.${'0'.repeat(-kk)}${digits}`;
  } else {
    const e = kk - 1;
    const exponent = e < 0 ? `e${e}` : `e+${e}`;
    body = length === 1 ? `${digits}${exponent}` : `${digits[0]}.${digits.slice(1)}${exponent}`;
  }
  return sign + body;
}
