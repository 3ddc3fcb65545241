// Cost of the userns-restrict policy for everyone else: an unmanaged process (host root, so
// the hooks run their full prologue) doing mkdir+rmdir, with the policy detached and attached
// in the same run, interleaved rounds so drift hits both sides equally. Needs a kernel that
// runs BPF-LSM programs: bench/run.ts runs it in the kernel lab (scripts/lab) from a host
// whose kernel refuses them, so both sides come from one boot.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsernsPolicy } from '../src/bpf/policy.js';

const PIN_DIR = `/sys/fs/bpf/mountgate-bench-${process.pid}`;
const ITERATIONS = Number(process.env.BPF_BENCH_ITERATIONS ?? 20000);
const ROUNDS = 7;

function loop(dir: string): number {
  const target = path.join(dir, 'd');
  const start = process.hrtime.bigint();
  for (let i = 0; i < ITERATIONS; i++) {
    fs.mkdirSync(target);
    fs.rmdirSync(target);
  }
  return Number(process.hrtime.bigint() - start) / ITERATIONS;
}

// tmpfs: the cheapest mkdir there is, so the hook cost is the largest possible share.
const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'mg-bpf-bench-'));
try {
  loop(dir); // warm-up
  const detached: number[] = [];
  const attached: number[] = [];
  let reason: string | undefined;
  // Each round measures both sides back to back, in alternating order, and yields one ratio:
  // on a shared machine slow drift then cancels out within a pair instead of between medians.
  const ratios: number[] = [];
  const withPolicy = (): number | undefined => {
    const policy = UsernsPolicy.install({ pinDir: PIN_DIR });
    try {
      const st = policy.status();
      if (!st.attached) {
        reason = st.reason;
        return undefined;
      }
      return loop(dir);
    } finally {
      policy.close();
      UsernsPolicy.uninstall(PIN_DIR);
    }
  };
  for (let r = 0; r < ROUNDS && reason === undefined; r++) {
    let on: number | undefined;
    let off: number;
    if (r % 2 === 0) {
      off = loop(dir);
      on = withPolicy();
    } else {
      on = withPolicy();
      off = loop(dir);
    }
    detached.push(off);
    if (on === undefined) break;
    attached.push(on);
    ratios.push(on / off);
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  console.log(`mkdir+rmdir, ${ITERATIONS} iterations x ${ROUNDS} rounds, unmanaged process, kernel ${os.release()}`);
  console.log(`  detached: ${median(detached).toFixed(0)} ns/iteration (median)`);
  if (reason !== undefined) {
    console.log(`  attached: not measured, policy could not be attached: ${reason}`);
    process.exitCode = 2;
  } else {
    const ratio = median(ratios);
    console.log(`  attached: ${median(attached).toFixed(0)} ns/iteration (median)`);
    console.log(`  overhead ratio: ${ratio.toFixed(4)} (${((ratio - 1) * 100).toFixed(2)} %, target <= 3 %; median of ${ratios.length} per-round ratios: ${ratios.map((x) => x.toFixed(3)).join(' ')})`);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
  UsernsPolicy.uninstall(PIN_DIR);
}
