// IDL text of the two interfaces userdbd serves (embedded so tsc output needs no extra files).
// Wire-compatible with systemd's io.systemd.NamespaceResource and io.systemd.UserDatabase.

export const NAMESPACE_RESOURCE_IDL = `# Allocates transient UID/GID ranges for user namespaces handed in by clients.
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
`;

export const USER_DATABASE_IDL = `# User and group records (JSON User/Group Records).
interface io.systemd.UserDatabase

# Look up a user record by UID and/or name.
method GetUserRecord(
  uid: ?int,
  userName: ?string,
  fuzzyNames: ?[]string,
  dispositionMask: ?[]string,
  uidMin: ?int,
  uidMax: ?int,
  # Restrict to this record UUID (systemd 262). Transient records have none, so nothing matches.
  uuid: ?string,
  service: string
) -> (
  record: object,
  incomplete: ?bool
)

# Look up a group record by GID and/or name.
method GetGroupRecord(
  gid: ?int,
  groupName: ?string,
  fuzzyNames: ?[]string,
  dispositionMask: ?[]string,
  gidMin: ?int,
  gidMax: ?int,
  # Restrict to this record UUID (systemd 262). Transient records have none, so nothing matches.
  uuid: ?string,
  service: string
) -> (
  record: object,
  incomplete: ?bool
)

# Look up user/group memberships.
method GetMemberships(
  userName: ?string,
  groupName: ?string,
  service: string
) -> (
  userName: string,
  groupName: string
)

error NoRecordFound ()
error BadService ()
error ServiceNotAvailable ()
error ConflictingRecordFound ()
error EnumerationNotSupported ()
error NonMatchingRecordFound ()
`;
