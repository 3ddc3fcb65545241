// io.systemd.NamespaceResource as userdbd serves it (userdbd/namespace-resource.ts), wire-
// compatible with systemd's nsresourced (src/shared/varlink-io.systemd.NamespaceResource.c).
import { defineInterface } from './define.js';
import { VarlinkError } from '../errors.js';
export const NamespaceResource = defineInterface<Methods, Errors>(`# Allocates transient UID/GID ranges for user namespaces handed in by clients.
interface io.systemd.NamespaceResource

# How AllocateUserRange maps a namespace.
type AllocateUserRangeType(
  # A transient UID/GID range from the pool (the default).
  managed,
  # The caller's own UID/GID, mapped to itself or to 0; no transient range.
  self
)

# Allocate a transient UID/GID range for an empty user namespace (uid_map/gid_map not yet
# written). The namespace must be owned by the caller. No UIDs are returned: read them off the
# namespace.
method AllocateUserRange(
  name: string,
  mangleName: ?bool,
  # 1 or 65536; 1 with type "self".
  size: int,
  # First ID inside the namespace (default 0). With type "self": 0, or unset to map the
  # caller's IDs to themselves.
  target: ?int,
  userNamespaceFileDescriptor: int,
  # 0-16 extra 64K ranges mapped 1:1 for nested namespaces.
  delegateContainerRanges: ?int,
  type: ?AllocateUserRangeType,
  # Also map the foreign UID/GID range (2147352576-2147418111) 1:1.
  mapForeign: ?bool,
  allowInteractiveAuthentication: ?bool
) -> (
  name: ?string
)

# Register an already initialized user namespace (no range is allocated).
method RegisterUserNamespace(
  name: string,
  mangleName: ?bool,
  userNamespaceFileDescriptor: int,
  allowInteractiveAuthentication: ?bool
) -> (
  name: ?string
)

# Allowlist a mount for a registered user namespace (root only).
method AddMountToUserNamespace(
  userNamespaceFileDescriptor: int,
  mountFileDescriptor: int,
  allowInteractiveAuthentication: ?bool
) -> ()

# Hand a cgroup subtree to the root user of a registered user namespace with a range.
method AddControlGroupToUserNamespace(
  userNamespaceFileDescriptor: int,
  controlGroupFileDescriptor: int,
  allowInteractiveAuthentication: ?bool
) -> ()

# Create a veth pair (peer in the namespace's network namespace, named namespaceInterfaceName,
# default host0) or a tap device (its fd is returned) for a registered user namespace.
method AddNetworkToUserNamespace(
  userNamespaceFileDescriptor: int,
  # veth only: a network namespace owned by the user namespace.
  networkNamespaceFileDescriptor: ?int,
  # veth only.
  namespaceInterfaceName: ?string,
  # "veth" or "tap".
  mode: string,
  allowInteractiveAuthentication: ?bool
) -> (
  hostInterfaceName: string,
  namespaceInterfaceName: ?string,
  interfaceFileDescriptor: ?int
)

# The BPF LSM policy is not available, user namespace allocation is disabled.
error UserNamespaceInterfaceNotSupported ()

# The namespace name is already taken.
error NameExists ()

# The user namespace is already registered.
error UserNamespaceExists ()

# The requested range is not mapped in the parent user namespace.
error DynamicRangeUnavailable ()

# No free range is left.
error NoDynamicRange ()

# The user namespace is not registered.
error UserNamespaceNotRegistered ()

# The user namespace has no transient range.
error UserNamespaceWithoutUserRange ()

# Too many control groups were added to the user namespace.
error TooManyControlGroups ()

# The control group was already added.
error ControlGroupAlreadyAdded ()

# Too many network interfaces were added to the user namespace.
error TooManyNetworkInterfaces ()

# Too many container ranges were requested for delegation.
error TooManyDelegations ()
`);

/** An io.systemd.NamespaceResource error (its name read from the IDL above). */
export class NamespaceResourceError extends VarlinkError {
  constructor(
    readonly kind: keyof Errors,
    detail?: string,
  ) {
    super(NamespaceResource.error[kind], {}, detail);
    this.name = 'NamespaceResourceError';
  }
}

// --- generated from the IDL by typegen.ts: do not edit below ---
export type AllocateUserRangeType = 'managed' | 'self';
export type AllocateUserRangeParameters = { name: string; mangleName?: boolean | null; size: number; target?: number | null; userNamespaceFileDescriptor: number; delegateContainerRanges?: number | null; type?: AllocateUserRangeType | null; mapForeign?: boolean | null; allowInteractiveAuthentication?: boolean | null };
export type AllocateUserRangeReply = { name?: string | null };
export type RegisterUserNamespaceParameters = { name: string; mangleName?: boolean | null; userNamespaceFileDescriptor: number; allowInteractiveAuthentication?: boolean | null };
export type RegisterUserNamespaceReply = { name?: string | null };
export type AddMountToUserNamespaceParameters = { userNamespaceFileDescriptor: number; mountFileDescriptor: number; allowInteractiveAuthentication?: boolean | null };
export type AddMountToUserNamespaceReply = Record<string, never>;
export type AddControlGroupToUserNamespaceParameters = { userNamespaceFileDescriptor: number; controlGroupFileDescriptor: number; allowInteractiveAuthentication?: boolean | null };
export type AddControlGroupToUserNamespaceReply = Record<string, never>;
export type AddNetworkToUserNamespaceParameters = { userNamespaceFileDescriptor: number; networkNamespaceFileDescriptor?: number | null; namespaceInterfaceName?: string | null; mode: string; allowInteractiveAuthentication?: boolean | null };
export type AddNetworkToUserNamespaceReply = { hostInterfaceName: string; namespaceInterfaceName?: string | null; interfaceFileDescriptor?: number | null };
export type Methods = { AllocateUserRange: { parameters: AllocateUserRangeParameters; reply: AllocateUserRangeReply }; RegisterUserNamespace: { parameters: RegisterUserNamespaceParameters; reply: RegisterUserNamespaceReply }; AddMountToUserNamespace: { parameters: AddMountToUserNamespaceParameters; reply: AddMountToUserNamespaceReply }; AddControlGroupToUserNamespace: { parameters: AddControlGroupToUserNamespaceParameters; reply: AddControlGroupToUserNamespaceReply }; AddNetworkToUserNamespace: { parameters: AddNetworkToUserNamespaceParameters; reply: AddNetworkToUserNamespaceReply } };
export type Errors = { UserNamespaceInterfaceNotSupported: Record<string, never>; NameExists: Record<string, never>; UserNamespaceExists: Record<string, never>; DynamicRangeUnavailable: Record<string, never>; NoDynamicRange: Record<string, never>; UserNamespaceNotRegistered: Record<string, never>; UserNamespaceWithoutUserRange: Record<string, never>; TooManyControlGroups: Record<string, never>; ControlGroupAlreadyAdded: Record<string, never>; TooManyNetworkInterfaces: Record<string, never>; TooManyDelegations: Record<string, never> };
// --- end of generated types ---
