// Connection tokens: round trip, malformed input, and byte-for-byte agreement with
// `remoteingress-bin token encode|decode` in both directions.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import {
  ConnectionTokenError,
  decodeConnectionToken,
  encodeConnectionToken,
  type IConnectionTokenData,
} from '../src/index.js';
import { binaryPath, run } from './helpers.js';

const FINGERPRINT = '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
// The Rust unit tests' known token for {hub.example.com, 8443, edge-1, secret}.
const KNOWN_TOKEN = 'eyJoIjoiaHViLmV4YW1wbGUuY29tIiwicCI6ODQ0MywiZSI6ImVkZ2UtMSIsInMiOiJzZWNyZXQifQ';

const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64url');

const SAMPLES: IConnectionTokenData[] = [
  { hubHost: 'hub.example.com', hubPort: 8443, edgeId: 'edge-1', secret: 'secret' },
  { hubHost: '127.0.0.1', hubPort: 1, edgeId: 'e', secret: 's', hubCertSha256: FINGERPRINT },
  { hubHost: '[::1]', hubPort: 65535, edgeId: 'kante-ü-東京', secret: 'q"uo\\te/+=_.~😀', hubCertSha256: FINGERPRINT.toUpperCase() },
  { hubHost: 'xn--bcher-kva.example', hubPort: 443, edgeId: 'x'.repeat(1024), secret: 'soft\u00adhyphen\u200b-zwsp' },
];

describe('connection tokens (TypeScript)', () => {
  test('encodes the canonical form of the Rust side', { timeout: 5_000 }, () => {
    assert.equal(encodeConnectionToken(SAMPLES[0]!), KNOWN_TOKEN);
    assert.deepEqual(decodeConnectionToken(KNOWN_TOKEN), SAMPLES[0]);
    const withPin = encodeConnectionToken(SAMPLES[1]!);
    assert.equal(
      Buffer.from(withPin, 'base64url').toString('utf8'),
      `{"h":"127.0.0.1","p":1,"e":"e","s":"s","f":"${FINGERPRINT}"}`,
    );
    assert.match(withPin, /^[A-Za-z0-9_-]+$/, 'base64url without padding');
  });

  test('round trips every sample; fingerprints come back lower-case', { timeout: 5_000 }, () => {
    for (const sample of SAMPLES) {
      const decoded = decodeConnectionToken(encodeConnectionToken(sample));
      const expected = { ...sample };
      if (expected.hubCertSha256 !== undefined) expected.hubCertSha256 = expected.hubCertSha256.toLowerCase();
      assert.deepEqual(decoded, expected);
    }
  });

  test('decoding is lenient only where meaning cannot change', { timeout: 5_000 }, () => {
    assert.deepEqual(decodeConnectionToken(`  ${KNOWN_TOKEN}\n`), SAMPLES[0]);
    assert.deepEqual(decodeConnectionToken(`${KNOWN_TOKEN}==`), SAMPLES[0], "canonical padding");
    assert.deepEqual(decodeConnectionToken(b64('{"s":"secret","e":"edge-1","p":8443,"h":"hub.example.com"}')), SAMPLES[0]);
    assert.deepEqual(decodeConnectionToken(b64(' { "h" : "h" , "p" : 1 , "e":"e","s":"s" } ')), {
      hubHost: 'h',
      hubPort: 1,
      edgeId: 'e',
      secret: 's',
    });
  });

  const malformed: Array<[string, string, RegExp]> = [
    ['empty', '   ', /^connection token is empty$/],
    ['too long', 'A'.repeat(8193), /is 8193 bytes long, more than the limit of 8192/],
    ['standard alphabet', `${KNOWN_TOKEN.slice(0, 10)}+${KNOWN_TOKEN.slice(11)}`, /unexpected character '\+' at offset 10 \(tokens use the URL-safe alphabet/],
    ['inner whitespace', `${KNOWN_TOKEN.slice(0, 5)} ${KNOWN_TOKEN.slice(5)}`, /unexpected character ' ' at offset 5/],
    ['truncated to 4n+1', KNOWN_TOKEN.slice(0, 77), /77 characters cannot be a complete encoding \(truncated token\?\)/],
    ['altered last character', `${KNOWN_TOKEN.slice(0, -1)}R`, /its last character 'R' at offset 77 has bits that decode to nothing/],
    ['excess padding', `${KNOWN_TOKEN}===`, /malformed '=' padding/],
    ['not UTF-8', Buffer.from([0x7b, 0x22, 0x68, 0xff]).toString('base64url'), /not UTF-8 \(invalid byte at offset 3\)/],
    ['not JSON', b64('{"h":"x","s":"hunter2'), /^decoded connection token is not valid JSON: EOF while parsing a string at line 1 column 21$/],
    ['not an object', b64('[1,{"h":2}]'), /^decoded connection token is an array, not a JSON object$/],
    ['missing field', b64('{"h":"h","p":1,"e":"e"}'), /^token is missing the secret \(field "s"\)$/],
    ['duplicate field', b64('{"h":"h","p":1,"e":"e","s":"a","s":"b"}'), /^token has the secret \(field "s"\) more than once$/],
    ['unknown field', b64('{"h":"h","p":1,"e":"e","s":"s","x":0}'), /^token has an unknown field "x" \(known fields: h, p, e, s, f\)$/],
    ['wrong type', b64('{"h":"h","p":"8443","e":"e","s":"s"}'), /^the hub port \(field "p"\) must be a JSON number, found a string$/],
    ['null', b64('{"h":"h","p":1,"e":"e","s":"s","f":null}'), /^the hub certificate fingerprint \(field "f"\) must be a JSON string, found null$/],
    ['port 0', b64('{"h":"h","p":0,"e":"e","s":"s"}'), /^hub port must be 1\.\.65535 \(field "p" is 0\)$/],
    ['port too big', b64('{"h":"h","p":65536,"e":"e","s":"s"}'), /^hub port must be 1\.\.65535 \(field "p" is 65536\)$/],
    ['fractional port', b64('{"h":"h","p":8443.0,"e":"e","s":"s"}'), /\(field "p" is 8443\.0\)$/],
    ['empty host', b64('{"h":"","p":1,"e":"e","s":"s"}'), /^the hub host \(field "h"\) must not be empty$/],
    ['non-ASCII host', b64('{"h":"bücher.example","p":1,"e":"e","s":"s"}'), /must be ASCII; write an international name in its punycode/],
    ['edge id with space', b64('{"h":"h","p":1,"e":"a b","s":"s"}'), /^token field "e": edge id must not contain whitespace or control characters$/],
    ['fingerprint with colons', b64(`{"h":"h","p":1,"e":"e","s":"s","f":"01:23"}`), /must be hex digits only, found ':' at offset 2 \(write it without ':' separators\)$/],
    ['short fingerprint', b64(`{"h":"h","p":1,"e":"e","s":"s","f":"${FINGERPRINT.slice(1)}"}`), /must be 64 hex digits \(a SHA-256 digest\), found 63 characters$/],
  ];

  for (const [name, token, message] of malformed) {
    test(`refuses a malformed token: ${name}`, { timeout: 5_000 }, () => {
      assert.throws(
        () => decodeConnectionToken(token),
        (error: unknown) => {
          assert.ok(error instanceof ConnectionTokenError, `a ConnectionTokenError, got ${String(error)}`);
          assert.match(error.message, message);
          return true;
        },
      );
    });
  }

  test('no error quotes the secret', { timeout: 5_000 }, () => {
    const secret = 'hunter2';
    for (const json of [
      `{"h":"","p":1,"e":"e","s":"${secret}"}`,
      `{"h":"h","p":1,"e":"e","s":"${secret}","f":"zz"}`,
      `{"h":"h","p":1,"e":"e","s":"${secret}`,
      `{"h":"h","p":1,"e":"e","s":"${secret}\\u0000"}`,
    ]) {
      assert.throws(() => decodeConnectionToken(b64(json)), (error: Error) => !error.message.includes(secret));
    }
    assert.throws(
      () => encodeConnectionToken({ hubHost: 'h', hubPort: 1, edgeId: 'e', secret: `${secret} x` }),
      (error: Error) => !error.message.includes(secret) && /secret must not contain whitespace/.test(error.message),
    );
  });

  test('encoding validates like decoding', { timeout: 5_000 }, () => {
    const base = SAMPLES[0]!;
    const cases: Array<[Partial<IConnectionTokenData>, RegExp]> = [
      [{ hubPort: 0 }, /field "p" is 0/],
      [{ hubPort: 70000 }, /field "p" is 70000/],
      [{ hubPort: 8443.5 }, /field "p" is 8443\.5/],
      [{ hubHost: 'a b' }, /must not contain whitespace/],
      [{ edgeId: '' }, /edge id must not be empty/],
      [{ secret: 'x'.repeat(1025) }, /secret is longer than 1024 bytes/],
      [{ hubCertSha256: 'abc' }, /found 3 characters/],
      [{ edgeId: 'lone\ud800' }, /lone surrogate/],
    ];
    for (const [change, message] of cases) {
      assert.throws(() => encodeConnectionToken({ ...base, ...change }), message, JSON.stringify(change));
    }
  });
});

describe('connection tokens agree with remoteingress-bin', () => {
  let bin: string;
  before(async () => {
    bin = await binaryPath();
  });

  const rustEncode = async (data: IConnectionTokenData): Promise<string> => {
    const args = ['token', 'encode', '--hub-host', data.hubHost, '--hub-port', String(data.hubPort), '--edge-id', data.edgeId, '--secret', data.secret];
    if (data.hubCertSha256 !== undefined) args.push('--cert-sha256', data.hubCertSha256);
    const result = await run(bin, args);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout.trim();
  };

  // `--` so a token that starts with '-' is not read as a flag.
  const rustDecode = (token: string) => run(bin, ['token', 'decode', '--', token]);

  test('TypeScript encode == Rust encode', { timeout: 30_000 }, async () => {
    for (const sample of SAMPLES) {
      assert.equal(encodeConnectionToken(sample), await rustEncode(sample), JSON.stringify(sample));
    }
  });

  test('Rust-encoded tokens decode in TypeScript', { timeout: 30_000 }, async () => {
    for (const sample of SAMPLES) {
      const expected = { ...sample };
      if (expected.hubCertSha256 !== undefined) expected.hubCertSha256 = expected.hubCertSha256.toLowerCase();
      assert.deepEqual(decodeConnectionToken(await rustEncode(sample)), expected);
    }
  });

  test('TypeScript-encoded tokens decode with `remoteingress-bin token decode`', { timeout: 30_000 }, async () => {
    for (const sample of SAMPLES) {
      const result = await rustDecode(encodeConnectionToken(sample));
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), {
        hubHost: sample.hubHost,
        hubPort: sample.hubPort,
        edgeId: sample.edgeId,
        secret: sample.secret,
        hubCertSha256: sample.hubCertSha256?.toLowerCase() ?? null,
      });
    }
  });

  test('both sides refuse the same malformed tokens with the same message', { timeout: 60_000 }, async () => {
    const tokens = [
      ...malformedTokens(),
      // serde_json's syntax errors, positions included
      ...[
        '{',
        '{"h"',
        '{"h" 1}',
        '{"h":1 "p"}',
        '{"h":tru}',
        '{"h":-}',
        '{"h":01}',
        '{"h":1.}',
        '{"h":1e}',
        '{"h":"\\q"}',
        '{"h":"\\ud800"}',
        '{"h":"\\udc00"}',
        '{"h":"\\ud800\\u0041"}',
        '{"h":"\\u12"}',
        '{1:2}',
        '{"a":1,}',
        '[1,]',
        '[1 2]',
        '{"h":"a\tb"}',
        '{"p":1e400}',
        '{"h":"x"}\n x',
        '{"h":"h","p":1e30,"e":"e","s":"s"}',
        '{"h":"h","p":18446744073709551616,"e":"e","s":"s"}',
        '{"h":"h","p":-0,"e":"e","s":"s"}',
        '{"h":"h","p":0.00001,"e":"e","s":"s"}',
        '{"h":"h","p":1.5e-7,"e":"e","s":"s"}',
        '{"h":"h","p":-9223372036854775809,"e":"e","s":"s"}',
        '{"x\u0301\\"\u00a0é\'\\\\":1}',
        '"just a string"',
        'null',
        // a top-level array's elements are skipped (serde's IgnoredAny), with other errors
        '[[1,]]',
        '[{"a" 1}]',
        '["\\ud800"]',
        '[1e400, -, 2]',
        '[0x]',
        `${'['.repeat(130)}]]]`,
        `{"h":${'['.repeat(130)}]]]}`,
        '{"h":"h","p":12345678901234567890123,"e":"e","s":"s"}',
        '{"h":"h","p":1e99999999999,"e":"e","s":"s"}',
        '{"h":"h","p":0e99999999999,"e":"e","s":"s"}',
      ].map(b64),
      `ab\u00a0cd`,
      `ab\u200bcd`,
      `ab'cd`,
      `ab😀cd`,
    ];
    for (const token of tokens) {
      let tsMessage: string;
      try {
        decodeConnectionToken(token);
        tsMessage = '<accepted>';
      } catch (error) {
        tsMessage = (error as Error).message;
      }
      const result = await rustDecode(token);
      const rustMessage =
        result.code === 0 ? '<accepted>' : result.stderr.trim().replace(/^remoteingress-bin: invalid token: /, '');
      assert.equal(tsMessage, rustMessage, `token ${JSON.stringify(token.slice(0, 60))}`);
    }
  });
});

function malformedTokens(): string[] {
  return [
    `${KNOWN_TOKEN.slice(0, 10)}+${KNOWN_TOKEN.slice(11)}`,
    `${KNOWN_TOKEN.slice(0, 5)}.${KNOWN_TOKEN.slice(5)}`,
    KNOWN_TOKEN.slice(0, 77),
    `${KNOWN_TOKEN.slice(0, -1)}R`,
    `${KNOWN_TOKEN}===`,
    `${KNOWN_TOKEN.slice(0, 8)}=${KNOWN_TOKEN.slice(8)}`,
    Buffer.from([0x7b, 0x22, 0x68, 0xff]).toString('base64url'),
    b64('{"h":"h","p":1,"e":"e","s":"s","x":0}'),
    b64(`{"${'k'.repeat(100)}":1}`),
    b64('{"h":"h","p":"8443","e":"e","s":"s"}'),
    b64('{"h":"h","p":true,"e":"e","s":"s"}'),
    b64('{"h":{},"p":1,"e":"e","s":"s"}'),
    b64('{"h":"h","p":1,"e":"e","s":"a","s":"b"}'),
    b64('{"h":"h","p":8443.0,"e":"e","s":"s"}'),
    b64('{"h":"h","p":1e3,"e":"e","s":"s"}'),
    b64('{"h":"hub\u00a0x","p":1,"e":"e","s":"s"}'),
    b64(`{"h":"${'h'.repeat(254)}","p":1,"e":"e","s":"s"}`),
    b64(`{"h":"h","p":1,"e":"e","s":"${'x'.repeat(1025)}"}`),
    b64('{"h":"h","p":1,"e":"e","s":"s","f":"é"}'),
    b64(`{"h":"h","p":1,"e":"e","s":"s","f":"${FINGERPRINT.slice(0, 62)}\u0301a"}`),
    b64(`{"h":"h","p":1,"e":"e","s":"s","f":"${FINGERPRINT}0"}`),
  ];
}
