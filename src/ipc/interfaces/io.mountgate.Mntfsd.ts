// io.mountgate.Mntfsd: mntfsd's own introspection (GetStatus in mntfsd/daemon.ts), read by
// `mountgate status` (cli/status.ts).
import { defineInterface } from './define.js';

export const MntfsdStatus = defineInterface<Methods, Errors>(`# What mntfsd holds: verified images and the mounts it handed out.
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
`);

// --- generated from the IDL by typegen.ts: do not edit below ---
export type CachedImage = { rootHash: string; fileSystemType: string };
export type GetStatusParameters = Record<string, never>;
export type GetStatusReply = { cachedImages: CachedImage[]; cacheHits: number; verifications: number; mountsHandedOut: number; copyBytesInMemory: number; copyBytesOnDisk: number; copyMemoryBudget: number };
export type Methods = { GetStatus: { parameters: GetStatusParameters; reply: GetStatusReply } };
export type Errors = Record<string, never>;
// --- end of generated types ---
