// io.systemd.MountFileSystem as mntfsd serves it (mntfsd/mount-image.ts, mntfsd/directory.ts),
// wire-compatible with systemd's mountfsd (src/shared/varlink-io.systemd.MountFileSystem.c).
// Returned verbatim by GetInterfaceDescription.
import { defineInterface } from './define.js';
import { VarlinkError } from '../errors.js';
export const MountFileSystem = defineInterface<Methods, Errors>(`# Mount file systems from disk images and directories, for unprivileged callers.
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
`);

export type MountFsErrorName = keyof Errors;

/** An io.systemd.MountFileSystem error, as vl_method_mount_image() (systemd's mountwork.c)
 * answers with it; the server sends it as it is (see ../errors.ts). */
export class MountFsError<K extends MountFsErrorName = MountFsErrorName> extends VarlinkError {
  /** `detail` is for logs only; it never goes on the wire. */
  constructor(
    readonly kind: K,
    readonly detail: string,
    ...parameters: Errors[K] extends Record<string, never> ? [] : [Errors[K]]
  ) {
    super(MountFileSystem.error[kind], parameters[0] ?? {}, `${kind}: ${detail}`);
    this.name = 'MountFsError';
  }
}

// --- generated from the IDL by typegen.ts: do not edit below ---
export type PartitionDesignator = 'root' | 'usr' | 'home' | 'srv' | 'esp' | 'xbootldr' | 'swap' | 'root_verity' | 'usr_verity' | 'root_verity_sig' | 'usr_verity_sig' | 'tmp' | 'var';
export type PartitionInfo = { designator: PartitionDesignator; writable: boolean; growFileSystem: boolean; partitionNumber?: number | null; architecture?: string | null; partitionUuid?: string | null; fileSystemType: string; partitionLabel?: string | null; size: number; offset: number; mountFileDescriptor: number; mountPoint?: string[] | null };
export type MountMapMode = 'root' | 'foreign' | 'identity' | 'auto';
export type MountImageParameters = { imageFileDescriptor: number; userNamespaceFileDescriptor?: number | null; readOnly?: boolean | null; growFileSystems?: boolean | null; password?: string | null; imagePolicy?: string | null; mountOptions?: Record<string, string> | null; relaxExtensionReleaseChecks?: boolean | null; veritySharing?: boolean | null; verityDataFileDescriptor?: number | null; verityRootHash?: string | null; verityRootHashSignature?: string | null; allowInteractiveAuthentication?: boolean | null };
export type MountImageReply = { partitions: PartitionInfo[]; imagePolicy: string; imageSize: number; sectorSize: number; imageName?: string | null; imageUuid?: string | null; singleFileSystem: boolean };
export type MountDirectoryParameters = { directoryFileDescriptor: number; userNamespaceFileDescriptor?: number | null; readOnly?: boolean | null; mode?: MountMapMode | null; allowInteractiveAuthentication?: boolean | null };
export type MountDirectoryReply = { mountFileDescriptor: number };
export type MakeDirectoryParameters = { parentFileDescriptor: number; name: string; mode?: number | null; allowInteractiveAuthentication?: boolean | null };
export type MakeDirectoryReply = { directoryFileDescriptor: number };
export type Methods = { MountImage: { parameters: MountImageParameters; reply: MountImageReply }; MountDirectory: { parameters: MountDirectoryParameters; reply: MountDirectoryReply }; MakeDirectory: { parameters: MakeDirectoryParameters; reply: MakeDirectoryReply } };
export type Errors = { IncompatibleImage: Record<string, never>; MultipleRootPartitionsFound: Record<string, never>; RootPartitionNotFound: Record<string, never>; DeniedByImagePolicy: Record<string, never>; KeyNotFound: Record<string, never>; VerityFailure: Record<string, never>; BadFileDescriptorFlags: { parameter: string } };
// --- end of generated types ---
