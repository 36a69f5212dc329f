#!/usr/bin/env node
// The `remoteingress` command (package.json "bin").
import { runCli } from './cli.js';

runCli().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`remoteingress: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  },
);
