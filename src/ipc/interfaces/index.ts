// Every Varlink interface mountgate speaks, one module each, named after the interface (as
// systemd's src/shared/varlink-io.systemd.*.c). A module holds the IDL text (what
// GetInterfaceDescription returns), the parsed interface with its method and error names read
// from that text, and the parameter, reply and error types generated from it (typegen.ts; see
// define.ts for how handlers and callers use them). Servers, handlers, the client library, the
// CLI and the daemons all import from here; nothing else writes an interface, a method name or
// an error name. The folder sits in ipc/ because everything that uses it sits above ipc/.
import { IoSystemd } from './io.systemd.js';
import { MntfsdStatus } from './io.mountgate.Mntfsd.js';
import { UserdbdStatus } from './io.mountgate.Userdbd.js';
import { MountFileSystem } from './io.systemd.MountFileSystem.js';
import { NamespaceResource } from './io.systemd.NamespaceResource.js';
import { UserDatabase } from './io.systemd.UserDatabase.js';
import { VarlinkService } from './org.varlink.service.js';

export const INTERFACES = [VarlinkService, IoSystemd, NamespaceResource, UserDatabase, MountFileSystem, UserdbdStatus, MntfsdStatus] as const;
