// Figure 6: socket activation, from connect() on a fresh socket (systemd-socket-activate
// listening, mntfsd not yet running) to the first reply (io.mountgate.Mntfsd.GetStatus). The
// shipped bundle next to the tsc output of the same sources, with Node's own start-up and
// module loading measured separately so the note can say where the time goes.
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { VarlinkClient } from '../src/ipc/client.js';
import { waitForSocket } from '../test/support/daemons.js';
import { median, ms, run, SHIPPED_ENTRY, SHIPPED_NAME, summarize, type BenchContext, type Figure } from '../test/support/figures.js';
import { startChild } from '../test/support/processes.js';

const ROUNDS = 10;
const TARGET_MS = 150;

interface Variant {
  name: string;
  entry: string;
}

/** Runs `node --input-type=module -e script` in the compiled tree; the script prints a number of ms. */
async function nodeMs(ctx: BenchContext, script: string): Promise<number> {
  const out = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: ctx.root });
  const n = Number(out.trim());
  if (!Number.isFinite(n)) throw new Error(`unexpected output: ${out.slice(0, 200)}`);
  return n;
}

/** ms from process start (performance.timeOrigin) until user code runs. */
const BOOT_SCRIPT = 'process.stdout.write(String(performance.now()))';
/** ms to import `specs` (fresh process, measured inside it). */
const importScript = (specs: string[]): string =>
  `const t = performance.now(); await Promise.all(${JSON.stringify(specs)}.map((s) => import(s))); process.stdout.write(String(performance.now() - t));`;
/** Third-party packages mntfsd loads before its first reply. */
const DEPENDENCIES = ['zod/mini', 'pino', 'koffi'];

/** The bundle chunk that `mountgate mntfsd` imports (its name carries a content hash). */
function mntfsdChunk(ctx: BenchContext): string {
  const main = path.join(ctx.root, SHIPPED_ENTRY);
  const m = /import\("\.\/(mntfsd-[A-Z0-9]+\.mjs)"\)/.exec(fs.readFileSync(main, 'utf8'));
  if (!m) throw new Error(`no mntfsd chunk named in ${main}`);
  return path.join(path.dirname(main), m[1]!);
}

/** One activation: socket-activate listens, we connect and call; returns ms to the reply. */
async function activateOnce(ctx: BenchContext, v: Variant, i: number): Promise<number> {
  const socket = path.join(ctx.work, `act-${i}.sock`);
  const child = startChild(['systemd-socket-activate', '-l', socket, process.execPath, v.entry, 'mntfsd', '--userdbd', 'none', '--verity-certs', ctx.certDir], { group: true, graceMs: 3000 });
  try {
    await waitForSocket(socket, child);
    await sleep(20); // let it reach poll()
    const t0 = performance.now();
    const client = await VarlinkClient.connect(socket);
    try {
      await client.call('io.mountgate.Mntfsd.GetStatus');
    } finally {
      client.close();
    }
    return performance.now() - t0;
  } finally {
    await child.stop();
    fs.rmSync(socket, { force: true });
  }
}

export async function activationFigure(ctx: BenchContext, log: (s: string) => void): Promise<Figure> {
  const shipped: Variant = { name: SHIPPED_NAME, entry: path.join(ctx.root, SHIPPED_ENTRY) };
  const tsc: Variant = { name: 'tsc output (dist/cli/main.js)', entry: path.join(ctx.root, 'dist/cli/main.js') };
  const variants = [shipped, tsc];
  const act = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const boot: number[] = [];
  const graphs = { bundle: [] as number[], tsc: [] as number[] };
  const deps = new Map<string, number[]>(DEPENDENCIES.map((d) => [d, []]));
  const bundleModules = [`file://${mntfsdChunk(ctx)}`];
  const tscModules = [`file://${path.join(ctx.root, 'dist/cli/mntfsd.js')}`];
  log(`${ROUNDS} activations per variant, interleaved, and start-up breakdown`);
  for (let r = 0; r < ROUNDS; r++) {
    for (const v of variants) act.get(v.name)!.push(await activateOnce(ctx, v, r));
    boot.push(await nodeMs(ctx, BOOT_SCRIPT));
    graphs.bundle.push(await nodeMs(ctx, importScript(bundleModules)));
    graphs.tsc.push(await nodeMs(ctx, importScript(tscModules)));
    for (const d of DEPENDENCIES) deps.get(d)!.push(await nodeMs(ctx, importScript([d])));
  }
  const tBoot = median(boot);
  const tBundle = median(graphs.bundle);
  const tTsc = median(graphs.tsc);
  const a = summarize(act.get(shipped.name)!);
  const b = summarize(act.get(tsc.name)!);
  const bundleKiB = fs.readdirSync(path.dirname(shipped.entry)).reduce((n, f) => n + fs.statSync(path.join(path.dirname(shipped.entry), f)).size, 0) / 1024;
  const depsText = DEPENDENCIES.map((d) => `${d} ${ms(median(deps.get(d)!))}`).join(', ');
  const notes = [
    `Breakdown (medians over ${boot.length} fresh processes, timed inside them): Node's own start-up until user code ${ms(tBoot)}; importing what \`mountgate mntfsd\` needs: ${ms(tBundle)} from the bundle, ${ms(tTsc)} from the tsc output (third-party packages on that path, each imported on its own from node_modules: ${depsText}). The rest of an activation is process spawn (fork/exec by systemd-socket-activate), daemon set-up (logger, IDL parsing, listening on the passed fd) and the call.`,
    `The bundle (${bundleKiB.toFixed(0)} KiB in all, code-split with esbuild): \`mountgate mntfsd\` loads main.mjs, its own chunk and the shared ones; userdbd, the BPF loader and run/build/inspect stay unloaded. PKCS#7 signatures are verified with node:crypto and a DER reader of our own (src/mntfsd/pkcs7.ts), no third-party ASN.1 stack. Validation uses zod/mini, imported by name so the bundler keeps only the validators in use (src/validation.ts). It saves ${ms(b.p50 - a.p50)} at p50 over the tsc output.`,
    `V8 compile cache: not available. NODE_COMPILE_CACHE / module.enableCompileCache() need Node ≥ 22.1; this is Node ${process.version}. Node's own start-up is a floor no code change removes.`,
  ];
  const met = a.p50 <= TARGET_MS;
  return {
    id: '6',
    title: 'Socket activation to first reply (mntfsd)',
    method: `\`systemd-socket-activate -l SOCK node ENTRY mntfsd --userdbd none\` started and listening; the benchmark then connects (t0) and calls io.mountgate.Mntfsd.GetStatus; t1 = the reply. The daemon is started by that connection (Node start, module loading, daemon set-up, accept, call). A fresh socket and process per run; variants interleaved. ENTRY = ${SHIPPED_NAME}, which the target applies to, and the tsc output of the same sources for comparison.`,
    samples: `${ROUNDS} activations per variant`,
    result: variants.map((v) => {
      const x = summarize(act.get(v.name)!);
      return `${v.name}: p50 ${ms(x.p50)}, p99 ${ms(x.p99)}`;
    }).join('; '),
    target: `≤ ${TARGET_MS} ms (p50, shipped bundle)`,
    status: met ? 'met' : 'missed',
    notes: met
      ? notes
      : [...notes, `Missed: Node's start-up (${ms(tBoot)}) and module loading (${ms(tBundle)}) dominate${tBoot >= TARGET_MS ? '; on this (loaded, 2-core) machine Node\'s start-up alone is at or above the target' : ''}. What would fix it: a V8 startup snapshot of the daemon (node --build-snapshot), or Node ≥ 22.1's compile cache.`],
  };
}
