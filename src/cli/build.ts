// `mountgate build DIR IMAGE --key KEY --cert CERT [--json]`: a signed DDI without systemd-repart.
import fs from 'node:fs';
import { buildDdi } from '../image-builder/build-ddi.js';
import { parseCommand, usageError, type Command } from './args.js';
import { progressBar } from './progress.js';

const BUILD_USAGE = `Usage: mountgate build DIR IMAGE --key KEY --cert CERT [--json]

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

const BUILD: Command = { name: 'build', usage: BUILD_USAGE };

function readPem(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new Error(`cannot read ${what} '${file}': ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
}

export async function buildCommand(args: string[]): Promise<number> {
  const parsed = parseCommand(BUILD, args, {
    allowPositionals: true,
    options: {
      key: { type: 'string' },
      cert: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (typeof parsed === 'number') return parsed;
  const { values, positionals } = parsed;
  if (positionals.length !== 2) return usageError(BUILD, 'expected exactly two arguments, DIR and IMAGE');
  if (!values.key) return usageError(BUILD, '--key KEY is required');
  if (!values.cert) return usageError(BUILD, '--cert CERT is required');
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
