// org.varlink.certification conformance client.
// Usage: certification-client.ts [--strict] [--verbose] unix:PATH
import { VarlinkClient } from '../../src/ipc/client.js';
import { runCertificationClient } from './certification.js';

const args = process.argv.slice(2);
const strict = args.includes('--strict');
const verbose = args.includes('--verbose');
const address = args.find((a) => !a.startsWith('--'));
if (!address) {
  process.stderr.write('usage: certification-client.ts [--strict] [--verbose] unix:PATH\n');
  process.exit(2);
}

try {
  const client = await VarlinkClient.connect(address);
  try {
    const result = await runCertificationClient(client, { strict });
    if (verbose) for (const line of result.log) process.stdout.write(`${line}\n`);
    for (const d of result.deviations) process.stderr.write(`note: ${d}\n`);
    process.stdout.write('certification: all_ok\n');
  } finally {
    client.close();
  }
} catch (e) {
  process.stderr.write(`certification: FAILED: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
