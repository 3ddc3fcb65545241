// Runs userdbd in its own process (for the kill -9 test): daemon-main.ts SOCKET STATE_DIR PIN_NAME
import { pino } from 'pino';
import { startUserdbd } from '../../src/userdbd/daemon.js';
import { loadPolicy } from './policy.js';

const [listen, stateDir, pinName] = process.argv.slice(2);
const { policy, real } = await loadPolicy(pinName);
await startUserdbd({ listen, stateDir, userdbLink: null, policy, allowWithoutPolicy: !real, sweepIntervalMs: 100, logger: pino({ level: 'silent' }) });
process.stdout.write('ready\n');
