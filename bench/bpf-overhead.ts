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
const ROUNDS = 5;

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
  for (let r = 0; r < ROUNDS && reason === undefined; r++) {
    detached.push(loop(dir));
    const policy = UsernsPolicy.install({ pinDir: PIN_DIR });
    const st = policy.status();
    if (st.attached) attached.push(loop(dir));
    else reason = st.reason;
    policy.close();
    UsernsPolicy.uninstall(PIN_DIR);
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
  console.log(`mkdir+rmdir, ${ITERATIONS} iterations x ${ROUNDS} rounds, unmanaged process, kernel ${os.release()}`);
  console.log(`  detached: ${median(detached).toFixed(0)} ns/iteration (median)`);
  if (reason !== undefined) {
    console.log(`  attached: not measured, policy could not be attached: ${reason}`);
    process.exitCode = 2;
  } else {
    const ratio = median(attached) / median(detached);
    console.log(`  attached: ${median(attached).toFixed(0)} ns/iteration (median)`);
    console.log(`  overhead ratio: ${ratio.toFixed(4)} (${((ratio - 1) * 100).toFixed(2)} %, target <= 3 %)`);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
  UsernsPolicy.uninstall(PIN_DIR);
}
