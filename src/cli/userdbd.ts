// `mountgate userdbd`: parse options, install the BPF policy and start the daemon (ipc/host.ts
// runs it until stopped).
import { DEFAULT_PIN_DIR, UsernsPolicy } from '../bpf/policy.js';
import { DEFAULT_IDLE_EXIT_SECONDS } from '../ipc/host.js';
import { createLogger, type Logger } from '../log.js';
import { DEFAULT_STATE_DIR, DEFAULT_USERDB_LINK, startUserdbd, type NamespacePolicy } from '../userdbd/daemon.js';
import { USERDBD_SOCKET } from '../sockets.js';
import { UnenforcedPolicy } from '../userdbd/unenforced-policy.js';
import type { Command } from './args.js';
import { parseDaemon } from './daemon-options.js';

const USERDBD_USAGE = `Usage: mountgate userdbd [OPTIONS]

Serve io.systemd.NamespaceResource and io.systemd.UserDatabase: hand transient 64K UID/GID
ranges to user namespaces that callers pass in, and free them when the namespaces die.
Uses the socket passed by systemd (LISTEN_FDS) when started by socket activation.

Options:
  --listen PATH            socket path (default ${USERDBD_SOCKET})
  --state-dir DIR          registry location (default ${DEFAULT_STATE_DIR})
  --userdb-link PATH|none  symlink for userdb clients (default ${DEFAULT_USERDB_LINK}
                           when listening on the default path)
  --bpf-pin-dir DIR        where the BPF policy is pinned (default ${DEFAULT_PIN_DIR})
  --allow-without-policy   allocate even if the BPF policy cannot be enforced (kernels that
                           refuse BPF-LSM programs). UNSAFE: a namespace can then leave files
                           owned by its transient ids, which the next holder of the range
                           inherits. Without it such kernels get UserNamespaceInterfaceNotSupported.
  --idle-exit SECONDS      exit after this long without connections while no namespace is
                           registered (their deaths are followed while any is); 0: never
                           (default: ${DEFAULT_IDLE_EXIT_SECONDS} when socket-activated, else never)
  -h, --help               show this text
`;

/** The BPF policy, or, when the kernel refuses it, a stand-in that reports why (allocation then
 * needs --allow-without-policy). */
function loadPolicy(pinDir: string, allowWithout: boolean, log: Logger): NamespacePolicy {
  const lsm = UsernsPolicy.lsmAvailable();
  let reason = "'bpf' is not an active LSM (/sys/kernel/security/lsm)";
  if (lsm) {
    const policy = UsernsPolicy.install({ pinDir });
    const st = policy.status();
    if (st.attached) return policy;
    policy.close();
    reason = st.reason ?? 'the BPF policy did not attach';
  }
  if (allowWithout) log.warn({ reason }, 'running WITHOUT the BPF write policy (--allow-without-policy)');
  else log.error({ reason }, 'BPF policy unavailable: user namespace allocation is disabled');
  return new UnenforcedPolicy(lsm, reason);
}

const USERDBD: Command = { name: 'userdbd', usage: USERDBD_USAGE };

export async function userdbdCommand(args: string[]): Promise<number> {
  const parsed = parseDaemon(USERDBD, args, {
    'userdb-link': { type: 'string' },
    'bpf-pin-dir': { type: 'string' },
    'allow-without-policy': { type: 'boolean' },
  });
  if (typeof parsed === 'number') return parsed;
  const { values, idleExitSeconds } = parsed;
  const log = createLogger('userdbd');
  const policy = loadPolicy(values['bpf-pin-dir'] ?? DEFAULT_PIN_DIR, values['allow-without-policy'] === true, log);
  const daemon = await startUserdbd({
    listen: values.listen,
    stateDir: values['state-dir'],
    userdbLink: values['userdb-link'] === 'none' ? null : values['userdb-link'],
    idleExitSeconds,
    policy,
    allowWithoutPolicy: values['allow-without-policy'] === true,
    logger: log,
    ownsProcess: true,
  });
  // Closing the policy stops reading death events; the pins keep enforcing it.
  void daemon.done.then(() => policy.close());
  return -1;
}
