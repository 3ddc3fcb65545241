// Joining user namespaces through one long-lived `mountgate-nshelper joiner` (see the protocol
// in src/native/nshelper.c). The daemon needs a process inside a namespace it only holds an fd
// for, to read and write /proc/<pid>/{uid_map,gid_map}. Node spawning a helper per request
// forks the whole daemon on the event loop; the joiner forks itself, a small process, instead.
import { spawn, type ChildProcess } from 'node:child_process';
import { native, POLL_DISCONNECT, POLL_READABLE, type Poller } from '../native/index.js';
import { SysError } from './errors.js';
import { nshelperPath, type UserNamespaceMember } from './nshelper.js';

const OP_JOIN = 1;
const OP_RELEASE = 2;
const FRAME = 8;
/** A request the joiner has not answered in this time means it is stuck: it is killed. */
const REQUEST_TIMEOUT_MS = 10_000;

interface Pending {
  resolve(result: number): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One joiner process and the daemon's end of its socket. Replies come in request order. */
class Joiner {
  private readonly fd: number;
  private readonly child: ChildProcess;
  private readonly poller: Poller;
  private readonly pending: Pending[] = [];
  private readonly frame = Buffer.alloc(64);
  private partial = Buffer.alloc(0);
  private stderr = '';
  /** Set once the joiner is unusable; every later request fails with it. */
  dead: Error | null = null;

  constructor() {
    const [mine, theirs] = native.socketpair();
    try {
      this.child = spawn(nshelperPath, ['joiner'], { stdio: ['ignore', 'ignore', 'pipe', theirs] });
    } catch (err) {
      native.close(mine);
      throw err;
    } finally {
      native.close(theirs);
    }
    this.fd = mine;
    // Neither the joiner nor its idle socket keeps the daemon's event loop alive.
    this.child.unref();
    this.child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      if (this.stderr.length < 4096) this.stderr += s;
    });
    (this.child.stderr as { unref?: () => void } | null)?.unref?.();
    this.child.once('error', (err) => this.fail(err));
    this.child.once('exit', (code, signal) => this.fail(new Error(`nshelper joiner exited with ${code ?? signal}: ${this.stderr.trim()}`)));
    this.poller = new native.Poller(mine, (status) => (status < 0 ? this.fail(new Error(`nshelper joiner socket: poll status ${status}`)) : this.onReadable()));
    this.poller.start(POLL_READABLE | POLL_DISCONNECT);
    this.poller.ref(false);
  }

  /** Sends {op, arg} (with `fds` on its first byte) and resolves with the joiner's result. */
  request(op: number, arg: number, fds: number[] = []): Promise<number> {
    if (this.dead) return Promise.reject(this.dead);
    const msg = Buffer.from(new Uint32Array([op, arg]).buffer); // native byte order, as the C side reads it
    let sent: number;
    try {
      sent = native.sendmsg(this.fd, msg, 0, FRAME, fds);
    } catch (err) {
      this.fail(err as Error); // EPIPE: it died and Node has not seen the exit yet
      return Promise.reject(err as Error);
    }
    if (sent !== FRAME) {
      // 8 bytes to a socket the joiner drains: anything short means it is not draining.
      const err = new Error(`nshelper joiner: request not sent (${sent} of ${FRAME} bytes)`);
      this.fail(err);
      return Promise.reject(err);
    }
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`nshelper joiner: no answer within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS);
      this.pending.push({ resolve, reject, timer });
      this.poller.ref(true);
    });
  }

  private onReadable(): void {
    for (;;) {
      let r;
      try {
        r = native.recvmsg(this.fd, this.frame);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      if (r === null) break;
      for (const fd of r.fds) native.close(fd); // the joiner sends none
      if (r.bytes === 0) {
        this.fail(new Error(`nshelper joiner closed its socket: ${this.stderr.trim()}`));
        return;
      }
      this.partial = Buffer.concat([this.partial, this.frame.subarray(0, r.bytes)]);
    }
    while (this.partial.length >= FRAME) {
      const result = new Int32Array(this.partial.buffer.slice(this.partial.byteOffset, this.partial.byteOffset + 4))[0]!;
      this.partial = this.partial.subarray(FRAME);
      const p = this.pending.shift();
      if (!p) {
        this.fail(new Error('nshelper joiner: reply without a request'));
        return;
      }
      clearTimeout(p.timer);
      p.resolve(result);
    }
    if (this.pending.length === 0) this.poller.ref(false);
  }

  /** Marks the joiner dead, fails what is pending and ends it; its members die with it. */
  private fail(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    this.poller.close();
    native.close(this.fd);
    this.child.kill('SIGKILL');
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }
}

let joiner: Joiner | null = null;

/** The running joiner, started on first use and restarted after it died. */
function current(): Joiner {
  if (!joiner || joiner.dead) joiner = new Joiner();
  return joiner;
}

/**
 * Puts a process into the user namespace `usernsFd` and resolves once it is a member. The fd
 * is only borrowed: the caller still owns and closes it. Rejects with a SysError from setns
 * (e.g. EINVAL for an fd that is not a user namespace).
 */
export async function joinUserNamespace(usernsFd: number): Promise<UserNamespaceMember> {
  let j = current();
  let result: number;
  try {
    result = await j.request(OP_JOIN, 0, [usernsFd]);
  } catch (err) {
    if (!j.dead) throw err;
    // The joiner had died (killed, crashed): one retry with a fresh one.
    j = current();
    result = await j.request(OP_JOIN, 0, [usernsFd]);
  }
  if (result < 0) throw new SysError(-result, 'setns', 'nshelper joiner, CLONE_NEWUSER');
  const pid = result;
  let released: Promise<void> | undefined;
  const release = (): Promise<void> => {
    released ??= (async () => {
      // A dead joiner took its members with it (PR_SET_PDEATHSIG): nothing left to end.
      if (j.dead) return;
      const r = await j.request(OP_RELEASE, pid).catch(() => 0);
      if (r < 0) throw new SysError(-r, 'nshelper joiner release', `pid ${pid}`);
    })();
    return released;
  };
  return { pid, release };
}
