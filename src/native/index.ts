// Typed loader for the mountgate N-API addon (src/native/*.c, built by node-gyp).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Events for Poller.start(): readable, writable or both. */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

export interface RecvResult {
  /** Bytes read; 0 means the peer closed the stream. */
  bytes: number;
  /** fds that arrived with these bytes (close-on-exec); the caller owns them. */
  fds: number[];
  /** The kernel dropped fds because the control buffer was too small. */
  truncated: boolean;
}

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface Poller {
  start(events: number): void;
  stop(): void;
  close(): void;
  ref(on: boolean): void;
}

export interface NativeAddon {
  listen(path: string, backlog: number): number;
  connect(path: string): number;
  accept(listenFd: number): number | null;
  socketpair(): [number, number];
  /** Returns bytes written, or -1 when the socket buffer is full. */
  sendmsg(fd: number, buf: Buffer, offset: number, length: number, fds: number[]): number;
  /** Returns null when nothing is available yet. */
  recvmsg(fd: number, buf: Buffer): RecvResult | null;
  peerCred(fd: number): PeerCred;
  /** Returns -1 when the kernel has no SO_PEERPIDFD. */
  peerPidfd(fd: number): number;
  close(fd: number): void;
  shutdown(fd: number): void;
  /** Sets O_NONBLOCK and FD_CLOEXEC (for inherited sockets). */
  setNonBlocking(fd: number): void;
  Poller: new (fd: number, callback: (status: number, events: number) => void) => Poller;
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** Repository root, whether running from src/ (tsx) or dist/ (compiled). */
export const projectRoot = path.resolve(here, '..', '..');
/** Directory holding the node-gyp outputs (the addon and the nshelper binary). */
export const nativeBuildDir = path.join(projectRoot, 'build', 'Release');

const require = createRequire(import.meta.url);
export const native = require(path.join(nativeBuildDir, 'mountgate.node')) as NativeAddon;
