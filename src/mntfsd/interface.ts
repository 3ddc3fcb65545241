// The io.systemd.MountFileSystem interface as mountgate serves it. Embedded as text (tsc
// does not copy data files to dist/) and returned verbatim by GetInterfaceDescription.
export const MOUNT_FILE_SYSTEM_IDL = `# Mount file systems from disk images and directories, for unprivileged callers.
interface io.systemd.MountFileSystem

type PartitionDesignator (
  root,
  usr,
  home,
  srv,
  esp,
  xbootldr,
  swap,
  root_verity,
  usr_verity,
  root_verity_sig,
  usr_verity_sig,
  tmp,
  var
)

type PartitionInfo (
  # The designator of this partition.
  designator: PartitionDesignator,
  # Whether the mount is writable.
  writable: bool,
  # Whether the file system is marked to grow to the partition size.
  growFileSystem: bool,
  # The GPT partition number, null for a bare file system.
  partitionNumber: ?int,
  # The CPU architecture of the partition, if it has one.
  architecture: ?string,
  # The GPT partition UUID.
  partitionUuid: ?string,
  # The file system type, e.g. erofs, squashfs, ext4.
  fileSystemType: string,
  # The GPT partition label.
  partitionLabel: ?string,
  # Size of the partition in bytes.
  size: int,
  # Offset of the partition in the image in bytes.
  offset: int,
  # Index of the detached mount fd in the fds attached to the reply.
  mountFileDescriptor: int,
  # Where the partition is meant to be mounted, relative to the image's root ("/", "/usr", ...);
  # the ESP has two ("/efi", "/boot"). Null for designators without one.
  mountPoint: ?[]string
)

# Verifies a disk image and returns one detached mount fd per partition, idmapped to the
# given user namespace.
method MountImage(
  # Index of the image fd: a regular file or block device, opened read-only or read-write.
  imageFileDescriptor: int,
  # Index of the target user namespace fd. Without one, callers other than root get only images
  # signed by a trusted key, read-only, nosuid and nodev (readOnly false is refused).
  userNamespaceFileDescriptor: ?int,
  # Mount read-only. Untrusted images are always read-only.
  readOnly: ?bool,
  # Grow file systems marked growfs (default true).
  growFileSystems: ?bool,
  # Passphrase for encrypted partitions (not supported by mountgate).
  password: ?string,
  # The caller's image policy, intersected with the daemon's.
  imagePolicy: ?string,
  # Mount options per partition designator. Not supported: anything but null or {} is
  # refused with InvalidParameter(mountOptions).
  mountOptions: ?[string]string,
  # Relax the extension-release checks of system/configuration extension images. Accepted;
  # mountgate does not check extension-release files at all.
  relaxExtensionReleaseChecks: ?bool,
  # Share the verified data of images with the same root hash. Accepted; mountgate always
  # does.
  veritySharing: ?bool,
  # External Verity data (hash tree) for a bare file system image, with verityRootHash (hex)
  # and optionally verityRootHashSignature (base64 PKCS#7). Not supported: refused with
  # InvalidParameter(verityDataFileDescriptor) once the three are consistent.
  verityDataFileDescriptor: ?int,
  verityRootHash: ?string,
  verityRootHashSignature: ?string,
  # Polkit is not used by mountgate; accepted for compatibility.
  allowInteractiveAuthentication: ?bool
) -> (
  partitions: []PartitionInfo,
  # The image policy that was applied.
  imagePolicy: string,
  imageSize: int,
  sectorSize: int,
  imageName: ?string,
  imageUuid: ?string,
  singleFileSystem: bool
)

# Which UID/GID mapping MountDirectory applies.
type MountMapMode (
  # The caller's UID becomes root of the user namespace; nothing else is mapped.
  root,
  # The foreign range (0x7FFE0000…0x7FFEFFFF) becomes the namespace's 0…65535.
  foreign,
  # No mapping: IDs stay as they are on disk.
  identity,
  # peer-owned directory: root; foreign-owned: foreign; anything else: identity.
  auto
)

# Returns a detached mount fd of a directory, idmapped for the given user namespace. Callers
# other than root need a user namespace of their own and a directory they own, or one owned by
# the foreign range below one they own.
method MountDirectory(
  # Index of the directory fd (O_PATH allowed).
  directoryFileDescriptor: int,
  # Index of the target user namespace fd.
  userNamespaceFileDescriptor: ?int,
  # Mount read-only (default false).
  readOnly: ?bool,
  mode: ?MountMapMode,
  # Polkit is not used by mountgate; accepted for compatibility.
  allowInteractiveAuthentication: ?bool
) -> (
  mountFileDescriptor: int
)

# Creates an empty directory owned by the foreign range's root (0x7FFE0000) in a directory the
# caller owns, and returns an fd of it.
method MakeDirectory(
  # Index of the parent directory fd (not O_PATH).
  parentFileDescriptor: int,
  # A single file name.
  name: string,
  # Access mode (default 0700); setuid, setgid, sticky and world-write bits are dropped.
  mode: ?int,
  # Polkit is not used by mountgate; accepted for compatibility.
  allowInteractiveAuthentication: ?bool
) -> (
  directoryFileDescriptor: int
)

# The image is not a usable disk image.
error IncompatibleImage()
# The image has more than one root partition for this architecture.
error MultipleRootPartitionsFound()
# The image has no root partition.
error RootPartitionNotFound()
# The image policy refuses the image.
error DeniedByImagePolicy()
# No trusted certificate matches the image's Verity signature.
error KeyNotFound()
# The data or hash tree does not match the root hash.
error VerityFailure()
# A passed fd was opened with flags that are not allowed.
error BadFileDescriptorFlags(parameter: string)
`;

/** MountImage's parameters as the server hands them over: checked against the IDL above,
 * fields it does not declare dropped. Absent and null both mean "not given". */
export interface MountImageParameters {
  imageFileDescriptor: number;
  userNamespaceFileDescriptor?: number | null;
  readOnly?: boolean | null;
  growFileSystems?: boolean | null;
  password?: string | null;
  imagePolicy?: string | null;
  mountOptions?: Record<string, string> | null;
  relaxExtensionReleaseChecks?: boolean | null;
  veritySharing?: boolean | null;
  verityDataFileDescriptor?: number | null;
  verityRootHash?: string | null;
  verityRootHashSignature?: string | null;
  allowInteractiveAuthentication?: boolean | null;
}

export type MountMapMode = 'root' | 'foreign' | 'identity' | 'auto';

/** MountDirectory's parameters as the server hands them over (see MountImageParameters). */
export interface MountDirectoryParameters {
  directoryFileDescriptor: number;
  userNamespaceFileDescriptor?: number | null;
  readOnly?: boolean | null;
  mode?: MountMapMode | null;
  allowInteractiveAuthentication?: boolean | null;
}

/** MakeDirectory's parameters as the server hands them over. */
export interface MakeDirectoryParameters {
  parentFileDescriptor: number;
  name: string;
  mode?: number | null;
  allowInteractiveAuthentication?: boolean | null;
}

// mountgate's own introspection, used by `mountgate status`.
export const MNTFSD_STATUS_IDL = `# What mntfsd holds: verified images and the mounts it handed out.
interface io.mountgate.Mntfsd

type CachedImage (
  # Verity root hash of the verified partition (hex).
  rootHash: string,
  fileSystemType: string
)

method GetStatus() -> (
  cachedImages: []CachedImage,
  # MountImage partitions served without verifying again.
  cacheHits: int,
  # Partitions verified and copied into private storage.
  verifications: int,
  # Mount fds handed out since start.
  mountsHandedOut: int,
  # Bytes of verified copies held in memory, and on disk in the state directory.
  copyBytesInMemory: int,
  copyBytesOnDisk: int,
  # What copies may hold in memory before they go to the state directory.
  copyMemoryBudget: int
)
`;
