// Where `remoteingress-bin` is found: an explicit path, `REMOTEINGRESS_BINARY`, the workspace's
// `target/release` or `target/debug` (next to this package), then PATH. The search itself is
// smartrust's RustBinaryLocator, so RustBridge and this module agree on the order.

import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RustBinaryLocator, type IBinaryLocatorOptions } from '@push.rocks/smartrust';

export const BINARY_NAME = 'remoteingress-bin';
export const BINARY_ENV_VAR = 'REMOTEINGRESS_BINARY';

/** The ts-wrapper directory (the one holding package.json), found from this module's location. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return path.dirname(fileURLToPath(import.meta.url));
    dir = parent;
  }
}

/** `../target/release/remoteingress-bin` and `../target/debug/remoteingress-bin`, from the package. */
export function workspaceBinaryPaths(): string[] {
  const workspace = path.resolve(packageRoot(), '..');
  return ['release', 'debug'].map((profile) => path.join(workspace, 'target', profile, BINARY_NAME));
}

/**
 * Locator options shared by `findBinary` and every RustBridge the supervisor creates. An
 * explicit `binaryPath` is the only place looked at: a missing or non-executable file is an
 * error, never a silent fallback to another binary.
 */
export function locatorOptions(binaryPath?: string): IBinaryLocatorOptions {
  if (binaryPath !== undefined) {
    return { binaryName: BINARY_NAME, binaryPath, localPaths: [], searchSystemPath: false };
  }
  return {
    binaryName: BINARY_NAME,
    envVarName: BINARY_ENV_VAR,
    localPaths: workspaceBinaryPaths(),
    searchSystemPath: true,
    ...(binaryPath === undefined ? {} : { binaryPath }),
  };
}

/**
 * Finds `remoteingress-bin`, or returns null. `binaryPath`, when given, is the only candidate;
 * otherwise `REMOTEINGRESS_BINARY`, the workspace build (release before debug), then PATH.
 */
export async function findBinary(binaryPath?: string): Promise<string | null> {
  return new RustBinaryLocator(locatorOptions(binaryPath)).findBinary();
}

/** Human-readable list of the places `findBinary` looks, for "not found" errors. */
export function describeBinarySearch(binaryPath?: string): string {
  if (binaryPath !== undefined) return `the binaryPath option (${binaryPath}) only`;
  const places = [
    `$${BINARY_ENV_VAR}${process.env[BINARY_ENV_VAR] ? ` (${process.env[BINARY_ENV_VAR]})` : ' (unset)'}`,
    ...workspaceBinaryPaths(),
    '$PATH',
  ];
  return places.join(', ');
}
