// Moved to test/support/ (daemons.ts, clients.ts, images.ts, processes.ts); kept only for the
// files that still import it from here until their owners switch.
export { buildSignedImages } from '../support/images.js';
export { cliAsUser, cliJsonAsUser } from '../support/clients.js';
export { startDaemon, stopDaemons } from '../support/daemons.js';
export type { UserRun } from '../support/processes.js';
