// io.systemd: the interface systemd's Varlink services all list in GetInfo. It declares the
// generic errno error, io.systemd.System {origin, errnoName, errno}, that our handlers answer
// with for kernel failures (SystemError in ../errors.ts), plus three errors sd-varlink only ever
// synthesizes on the client side. The text is systemd 262's, byte for byte, as
// GetInterfaceDescription returns it there (sd-varlink's vl_interface_io_systemd). No methods: a
// call to io.systemd.* gets MethodNotFound.
import { defineInterface } from './define.js';

export const IoSystemd = defineInterface<Methods, Errors>(`interface io.systemd

# Local error if a Varlink connection is disconnected (this never crosses the wire and is synthesized locally only).
error Disconnected()

# A method call time-out has been reached (also synthesized locally, does not cross wire)
error TimedOut()

# Some form of protocol error (also synthesized locally, does not cross wire)
error Protocol()

# A generic Linux system error ("errno"s).
error System(
	# The origin of this system error, typically 'linux' to indicate Linux error numbers.
	origin: ?string,
	# The Linux error name, i.e. ENOENT, EHWPOISON or similar.
	errnoName: ?string,
	# The numeric Linux error number. Typically the name is preferable, if specified.
	errno: ?int
)
`);

// --- generated from the IDL by typegen.ts: do not edit below ---
export type Methods = Record<string, never>;
export type Errors = { Disconnected: Record<string, never>; TimedOut: Record<string, never>; Protocol: Record<string, never>; System: { origin?: string | null; errnoName?: string | null; errno?: number | null } };
// --- end of generated types ---
