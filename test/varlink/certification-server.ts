// org.varlink.certification conformance server. Usage: certification-server.ts unix:PATH
import { VarlinkServer } from '../../src/ipc/server.js';
import { createCertificationService } from './certification.js';

const address = process.argv[2];
if (!address?.startsWith('unix:')) {
  process.stderr.write('usage: certification-server.ts unix:PATH\n');
  process.exit(2);
}
const socketPath = address.slice(5).split(';')[0];
const server = new VarlinkServer({ vendor: 'mountgate', product: 'certification', version: '1', url: 'https://github.com/mountgate/mountgate' });
server.addService(createCertificationService());
server.listenPath(socketPath);
process.stdout.write(`certification server listening on unix:${socketPath}\n`);
const stop = (): void => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
