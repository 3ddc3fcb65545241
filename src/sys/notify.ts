// sd_notify(3): one datagram to $NOTIFY_SOCKET so Type=notify units learn we are ready.
import koffi from 'koffi';
import * as fs from 'node:fs';
import { check } from './errors.js';

const lib = koffi.load('libc.so.6');
const rawSocket: (domain: number, type: number, protocol: number) => number = lib.func('int socket(int, int, int)');
const rawSendto: (fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrlen: number) => number = lib.func(
  'long sendto(int, const void *, size_t, int, const void *, uint32_t)',
);

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const SUN_PATH_MAX = 108;

/** Encodes a sockaddr_un; a leading '@' names an abstract socket. */
function sockaddrUn(path: string): Buffer {
  const name = Buffer.from(path.startsWith('@') ? `\0${path.slice(1)}` : path);
  if (name.length === 0 || name.length >= SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET path is invalid: ${path}`);
  const addr = Buffer.alloc(2 + name.length + (path.startsWith('@') ? 0 : 1));
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  return addr;
}

/** Sends `state` (e.g. "READY=1") when $NOTIFY_SOCKET is set; returns whether it was sent. */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const path = env.NOTIFY_SOCKET;
  if (!path) return false;
  const addr = sockaddrUn(path);
  const fd = check(rawSocket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), 'socket');
  try {
    const msg = Buffer.from(state);
    check(rawSendto(fd, msg, msg.length, MSG_NOSIGNAL, addr, addr.length), 'sendto', path);
    return true;
  } finally {
    fs.closeSync(fd);
  }
}
