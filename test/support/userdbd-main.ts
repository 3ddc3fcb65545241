// userdbd in a process of its own, as the tests that kill, restart or measure it start it
// (UserdbdProcess): userdbd-main.ts SOCKET STATE_DIR PIN_NAME [SWEEP_MS]. It runs with the
// test policy (policy.ts) and logs at MOUNTGATE_LOG_LEVEL; SIGTERM closes it.
import { startUserdbd } from '../../src/userdbd/daemon.js';
import { loadPolicy } from './policy.js';

const [listen, stateDir, pinName, sweep = '100'] = process.argv.slice(2);
const { policy, real } = await loadPolicy(pinName!);
const d = await startUserdbd({ listen, stateDir: stateDir!, userdbLink: null, policy, allowWithoutPolicy: !real, sweepIntervalMs: Number(sweep) });
process.once('SIGTERM', () => void d.close().then(() => { policy.close(); process.exit(0); }));
