// `mountgate build DIR IMAGE --key KEY --cert CERT [--json]`: a signed DDI without systemd-repart.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { buildDdi } from '../image-builder/build-ddi.js';
import { progressBar } from './progress.js';

export const BUILD_USAGE = `Usage: mountgate build DIR IMAGE --key KEY --cert CERT [--json]

Make a signed Discoverable Disk Image from the directory DIR: a GPT image with an erofs
root partition, its dm-verity hash partition and a verity signature partition, as
systemd-repart would make it. Needs mkfs.erofs (erofs-utils).

Options:
  --key KEY    PEM private key (RSA or ECDSA, unencrypted) that signs the root hash
  --cert CERT  PEM X.509 certificate of that key; verifiers must trust it
               (e.g. copy it to /etc/verity.d/NAME.crt)
  --json       print the result as JSON on stdout
  -h, --help   show this text

Exit status: 0 built, 1 build failed, 2 usage error.
`;

function usageError(msg: string): number {
  process.stderr.write(`mountgate build: ${msg}\n${BUILD_USAGE}`);
  return 2;
}

function readPem(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`cannot read ${what} '${file}': ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
}

function parse(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      key: { type: 'string' },
      cert: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
}

export async function buildCommand(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(args);
  } catch (err) {
    return usageError(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(BUILD_USAGE);
    return 0;
  }
  if (positionals.length !== 2) return usageError('expected exactly two arguments, DIR and IMAGE');
  if (!values.key) return usageError('--key KEY is required');
  if (!values.cert) return usageError('--cert CERT is required');
  const [sourceDir, output] = positionals as [string, string];

  const bar = progressBar('hashing');
  try {
    const keyPem = readPem(values.key, 'key');
    const certPem = readPem(values.cert, 'certificate');
    const result = await buildDdi({ sourceDir, output, keyPem, certPem, onProgress: bar?.update });
    bar?.clear();
    if (values.json) process.stdout.write(`${JSON.stringify({ image: output, rootHash: result.rootHash, size: result.size })}\n`);
    else process.stdout.write(`Built ${output} (${result.size} bytes), root hash ${result.rootHash}\n`);
    return 0;
  } catch (err) {
    bar?.clear();
    process.stderr.write(`mountgate build: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
