// Transitional: userdbd's interfaces are declared in ipc/interfaces/ (io.systemd.NamespaceResource.ts,
// io.systemd.UserDatabase.ts). Goes once no test imports these names.
import { NamespaceResource } from '../ipc/interfaces/io.systemd.NamespaceResource.js';
import { UserDatabase } from '../ipc/interfaces/io.systemd.UserDatabase.js';

export const NAMESPACE_RESOURCE_IDL = NamespaceResource.idl;
export const USER_DATABASE_IDL = UserDatabase.idl;
