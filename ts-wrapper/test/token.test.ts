// Connection tokens: round trip, malformed input, and agreement with `remoteingress-bin token
// encode|decode` in both directions (same tokens, same refusals).

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
// The Rust unit tests' known token for {hub.example.com, 8443, edge-1, correct-horse-battery}.
const KNOWN_TOKEN = 'eyJoIjoiaHViLmV4YW1wbGUuY29tIiwicCI6ODQ0MywiZSI6ImVkZ2UtMSIsInMiOiJjb3JyZWN0LWhvcnNlLWJhdHRlcnkifQ';

// A secret of the shortest accepted length (16 bytes).
const S16 = '0123456789abcdef';

const b64 = (text: string): string => Buffer.from(text, 'utf8').toString('base64url');

const SAMPLES: IConnectionTokenData[] = [
  { hubHost: 'hub.example.com', hubPort: 8443, edgeId: 'edge-1', secret: 'correct-horse-battery' },
  { hubHost: '127.0.0.1', hubPort: 1, edgeId: 'e', secret: S16, hubCertSha256: FINGERPRINT },
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
      `{"h":"127.0.0.1","p":1,"e":"e","s":"${S16}","f":"${FINGERPRINT}"}`,
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
    assert.deepEqual(decodeConnectionToken(b64('{"s":"correct-horse-battery","e":"edge-1","p":8443,"h":"hub.example.com"}')), SAMPLES[0]);
    assert.deepEqual(decodeConnectionToken(b64(' { "h" : "h" , "p" : 1 , "e":"e","s":"0123456789abcdef" } ')), {
      hubHost: 'h',
      hubPort: 1,
      edgeId: 'e',
      secret: S16,
    });
  });

  const malformed: Array<[string, string, RegExp]> = [
    ['empty', '   ', /^connection token is empty$/],
    ['too long', 'A'.repeat(8193), /longer than 8192 bytes/],
    ['standard alphabet', `${KNOWN_TOKEN.slice(0, 10)}+${KNOWN_TOKEN.slice(11)}`, /not base64url/],
    ['inner whitespace', `${KNOWN_TOKEN.slice(0, 5)} ${KNOWN_TOKEN.slice(5)}`, /not base64url/],
    ['truncated to 4n+1', KNOWN_TOKEN.slice(0, 77), /not base64url/],
    ['altered last character', `${KNOWN_TOKEN.slice(0, -1)}R`, /not base64url/],
    ['excess padding', `${KNOWN_TOKEN}===`, /not base64url/],
    ['not UTF-8', Buffer.from([0x7b, 0x22, 0x68, 0xff]).toString('base64url'), /not UTF-8 JSON/],
    ['not JSON', b64('{"h":"x","s":"hunter2'), /not UTF-8 JSON/],
    ['not an object', b64('[1,{"h":2}]'), /not a JSON object$/],
    ['missing field', b64('{"h":"h","p":1,"e":"e"}'), /^token field "s" \(secret\) is missing$/],
    ['unknown field', b64('{"h":"h","p":1,"e":"e","s":"0123456789abcdef","x":0}'), /^token has an unknown field "x"$/],
    ['wrong type', b64('{"h":"h","p":"8443","e":"e","s":"0123456789abcdef"}'), /^token field "p" \(hub port\) must be an integer 1\.\.65535$/],
    ['port 0', b64('{"h":"h","p":0,"e":"e","s":"0123456789abcdef"}'), /must be an integer 1\.\.65535$/],
    ['port too big', b64('{"h":"h","p":65536,"e":"e","s":"0123456789abcdef"}'), /must be an integer 1\.\.65535$/],
    ['fractional port', b64('{"h":"h","p":8443.5,"e":"e","s":"0123456789abcdef"}'), /must be an integer 1\.\.65535$/],
    ['empty host', b64('{"h":"","p":1,"e":"e","s":"0123456789abcdef"}'), /^token field "h" \(hub host\) must not be empty$/],
    ['non-ASCII host', b64('{"h":"bücher.example","p":1,"e":"e","s":"0123456789abcdef"}'), /must be ASCII \(write an international name in punycode/],
    ['short secret', b64('{"h":"h","p":1,"e":"e","s":"fifteen-bytes.."}'), /^token field "s" \(secret\) is shorter than 16 bytes: generate one with `remoteingress-bin secret new`/],
    ['edge id with space', b64('{"h":"h","p":1,"e":"a b","s":"0123456789abcdef"}'), /^token field "e" \(edge id\) must not contain whitespace or control characters$/],
    ['fingerprint with colons', b64(`{"h":"h","p":1,"e":"e","s":"0123456789abcdef","f":"01:23"}`), /must be 64 hex digits, no ':'$/],
    ['short fingerprint', b64(`{"h":"h","p":1,"e":"e","s":"0123456789abcdef","f":"${FINGERPRINT.slice(1)}"}`), /must be 64 hex digits/],
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
      `{"h":"h","p":1,"e":"e","s":"${secret}"} trailing`,
      `{"h":"h","p":1,"e":"e","s":"${secret}" "x"}`,
      `{"h":"h","p":1,"e":"e","s":{"x":"${secret}"}}`,
    ]) {
      assert.throws(() => decodeConnectionToken(b64(json)), (error: Error) => !error.message.includes(secret));
    }
    assert.throws(
      () => encodeConnectionToken({ hubHost: 'h', hubPort: 1, edgeId: 'e', secret: `${secret} x` }),
      (error: Error) => !error.message.includes(secret) && /\(secret\) must not contain whitespace/.test(error.message),
    );
  });

  test('encoding validates like decoding', { timeout: 5_000 }, () => {
    const base = SAMPLES[0]!;
    const cases: Array<[Partial<IConnectionTokenData>, RegExp]> = [
      [{ hubPort: 0 }, /field "p" \(hub port\) must be an integer/],
      [{ hubPort: 70000 }, /field "p" \(hub port\) must be an integer/],
      [{ hubPort: 8443.5 }, /field "p" \(hub port\) must be an integer/],
      [{ hubHost: 'a b' }, /must not contain whitespace/],
      [{ edgeId: '' }, /\(edge id\) must not be empty/],
      [{ secret: 'x'.repeat(1025) }, /\(secret\) is longer than 1024 bytes/],
      [{ secret: 'x'.repeat(15) }, /\(secret\) is shorter than 16 bytes/],
      [{ hubCertSha256: 'abc' }, /64 hex digits/],
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

  test('both sides refuse the same malformed tokens, each with a reason', { timeout: 60_000 }, async () => {
    const tokens = [
      ...malformedTokens(),
      ...[
        '{',
        '{"h":1 "p"}',
        '{"h":"\\ud800"}',
        '{"h":"h","p":1e400,"e":"e","s":"0123456789abcdef"}',
        '{"h":"h","p":1,"e":"e","s":"0123456789abcdef"} x',
        '"just a string"',
        'null',
        '[1,2]',
        `{"h":${'['.repeat(130)}]]]}`,
      ].map(b64),
      `ab\u00a0cd`,
      `ab😀cd`,
    ];
    for (const token of tokens) {
      const label = `token ${JSON.stringify(token.slice(0, 60))}`;
      assert.throws(() => decodeConnectionToken(token), ConnectionTokenError, label);
      const result = await rustDecode(token);
      assert.notEqual(result.code, 0, label);
      assert.match(result.stderr, /^remoteingress-bin: invalid token: \S/, label);
    }
  });

  test('two spellings no encoder writes: TypeScript accepts them, Rust refuses', { timeout: 30_000 }, async () => {
    // JSON.parse keeps the last of duplicate keys and reads 8443.0 as 8443; serde refuses both.
    for (const json of ['{"h":"h","p":1,"e":"e","s":"a-0123456789abcdef","s":"b-0123456789abcdef"}', '{"h":"h","p":8443.0,"e":"e","s":"0123456789abcdef"}']) {
      assert.ok(decodeConnectionToken(b64(json)), json);
      assert.notEqual((await rustDecode(b64(json))).code, 0, json);
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
    b64('{"h":"h","p":1,"e":"e","s":"0123456789abcdef","x":0}'),
    b64(`{"${'k'.repeat(100)}":1}`),
    b64('{"h":"h","p":"8443","e":"e","s":"0123456789abcdef"}'),
    b64('{"h":"h","p":true,"e":"e","s":"0123456789abcdef"}'),
    b64('{"h":{},"p":1,"e":"e","s":"0123456789abcdef"}'),
    b64('{"h":"h","p":8443.5,"e":"e","s":"0123456789abcdef"}'),
    b64('{"h":"h","p":0,"e":"e","s":"0123456789abcdef"}'),
    b64('{"h":"hub\u00a0x","p":1,"e":"e","s":"0123456789abcdef"}'),
    b64(`{"h":"${'h'.repeat(254)}","p":1,"e":"e","s":"0123456789abcdef"}`),
    b64(`{"h":"h","p":1,"e":"e","s":"${'x'.repeat(1025)}"}`),
    b64('{"h":"h","p":1,"e":"e","s":"0123456789abcdef","f":"é"}'),
    b64(`{"h":"h","p":1,"e":"e","s":"0123456789abcdef","f":"${FINGERPRINT.slice(0, 62)}\u0301a"}`),
    b64(`{"h":"h","p":1,"e":"e","s":"0123456789abcdef","f":"${FINGERPRINT}0"}`),
  ];
}
