// Typed loader for the mountgate N-API addon (src/native/*.c, built by node-gyp).
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Events for Poller.start(): readable, writable or both. */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;
/** The peer closed or shut down its side (reported without reading). */
export const POLL_DISCONNECT = 4;

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
  /**
   * dm-verity (hash type 1, sha256) check of `count` blocks of `blockSize` bytes held in
   * `data`: SHA-256(salt || block) must equal the digest for block i at
   * `expected[floor(i / hashesPerBlock) * hashBlockSize + (i % hashesPerBlock) * 32]`.
   * Runs on all CPUs off the JS thread. Resolves -1 when all match, else the index of a
   * mismatching block.
   */
  verityVerifyMemory(
    data: Buffer,
    blockSize: number,
    count: number,
    salt: Buffer,
    expected: Buffer,
    hashBlockSize: number,
    hashesPerBlock: number,
  ): Promise<number>;
  /**
   * Same check for blocks read from `srcFd` at `srcOffset`. Unless `dstFd` is -1, every
   * chunk is read once into private memory, hashed there, and that memory written to
   * `dstFd` at `dstOffset` + the same relative position. Rejects with an errno-coded
   * Error (positive errno) on I/O failure (ENODATA when the source is shorter than `count` blocks).
   */
  verityVerifyFd(
    srcFd: number,
    srcOffset: number,
    dstFd: number,
    dstOffset: number,
    blockSize: number,
    count: number,
    salt: Buffer,
    expected: Buffer,
    hashBlockSize: number,
    hashesPerBlock: number,
  ): Promise<number>;
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** Repository root, whether running from src/ (tsx) or dist/ (compiled). */
export const projectRoot = path.resolve(here, '..', '..');
/** Directory holding the node-gyp outputs (the addon and the nshelper binary). */
export const nativeBuildDir = path.join(projectRoot, 'build', 'Release');

const require = createRequire(import.meta.url);
const addon = require(path.join(nativeBuildDir, 'mountgate.node')) as NativeAddon;

/**
 * The addon. Its errors carry `code` (the errno name), `syscall` and `errno`, positive as
 * everywhere in mountgate (mg_throw_errno() in helpers.c; Node's own errors negate it).
 */
export const native: NativeAddon = addon;
