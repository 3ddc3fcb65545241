// Discoverable Partitions Specification (UAPI.2): GPT type UUIDs and attribute flags.

/**
 * Partition designators as systemd names them (partition_designator_to_string()), in its
 * PartitionDesignator order, which is also the canonical output order of image policies.
 */
export const DESIGNATORS = [
  'root', 'usr', 'home', 'srv', 'esp', 'xbootldr', 'swap',
  'root-verity', 'usr-verity', 'root-verity-sig', 'usr-verity-sig', 'tmp', 'var',
] as const;
export type Designator = (typeof DESIGNATORS)[number];

export type Architecture = 'x86-64' | 'arm64';

export interface PartitionType {
  designator: Designator;
  /** null for architecture-independent types. */
  architecture: Architecture | null;
}

const table: Array<[string, Designator, Architecture | null]> = [
  ['4f68bce3-e8cd-4db1-96e7-fbcaf984b709', 'root', 'x86-64'],
  ['8484680c-9521-48c6-9c11-b0720656f69e', 'usr', 'x86-64'],
  ['2c7357ed-ebd2-46d9-aec1-23d437ec2bf5', 'root-verity', 'x86-64'],
  ['77ff5f63-e7b6-4633-acf4-1565b864c0e6', 'usr-verity', 'x86-64'],
  ['41092b05-9fc8-4523-994f-2def0408b176', 'root-verity-sig', 'x86-64'],
  ['e7bb33fb-06cf-4e81-8273-e543b413e2e2', 'usr-verity-sig', 'x86-64'],
  ['b921b045-1df0-41c3-af44-4c6f280d3fae', 'root', 'arm64'],
  ['b0e01050-ee5f-4390-949a-9101b17104e9', 'usr', 'arm64'],
  ['df3300ce-d69f-4c92-978c-9bfb0f38d820', 'root-verity', 'arm64'],
  ['6e11a4e7-fbca-4ded-b9e9-e1a512bb664e', 'usr-verity', 'arm64'],
  ['6db69de6-29f4-4758-a7a5-962190f00ce3', 'root-verity-sig', 'arm64'],
  ['c23ce4ff-44bd-4b00-b2d4-b41b3419e02a', 'usr-verity-sig', 'arm64'],
  ['c12a7328-f81f-11d2-ba4b-00a0c93ec93b', 'esp', null],
  ['bc13c2ff-59e6-4262-a352-b275fd6f7172', 'xbootldr', null],
  ['0657fd6d-a4ab-43c4-84e5-0933c84b4f4f', 'swap', null],
  ['933ac7e1-2eb4-4f13-b844-0e14e2aef915', 'home', null],
  ['3b8f8425-20e0-4f3b-907f-1a25a76f98e8', 'srv', null],
  ['4d21b016-b534-45c2-a9fb-5c16e091fd2d', 'var', null],
  ['7ec6f557-3bc5-4aca-b293-16ef5df639d1', 'tmp', null],
];

const byUuid = new Map<string, PartitionType>(table.map(([uuid, designator, architecture]) => [uuid, { designator, architecture }]));

/** Type UUID of a designator (for image builders and tests). */
export function typeUuidOf(designator: Designator, architecture: Architecture | null): string | undefined {
  return table.find(([, d, a]) => d === designator && (a === architecture || a === null))?.[0];
}

/** Classifies a GPT type UUID (any case); undefined for types DPS does not auto-discover. */
export function partitionType(typeUuid: string): PartitionType | undefined {
  return byUuid.get(typeUuid.toLowerCase());
}

/** The architecture this process runs on, in DPS spelling; null if DPS has no types for it here. */
export function nativeArchitecture(): Architecture | null {
  return process.arch === 'x64' ? 'x86-64' : process.arch === 'arm64' ? 'arm64' : null;
}

const GPT_FLAG_NO_AUTO = 1n << 63n;
const GPT_FLAG_READ_ONLY = 1n << 60n;
const GPT_FLAG_GROWFS = 1n << 59n;

/** Designators whose no-auto flag means "skip in discovery" (ESP has its own rules). */
const honoursNoAuto = new Set<Designator>([
  'root', 'usr', 'root-verity', 'usr-verity', 'root-verity-sig', 'usr-verity-sig',
  'home', 'srv', 'var', 'tmp', 'swap', 'xbootldr',
]);
/** Designators where the read-only and growfs flags apply. */
const honoursReadOnly = new Set<Designator>([
  'root', 'usr', 'root-verity', 'usr-verity', 'root-verity-sig', 'usr-verity-sig',
  'home', 'srv', 'var', 'tmp', 'xbootldr',
]);
const honoursGrowFs = new Set<Designator>(['root', 'usr', 'home', 'srv', 'var', 'tmp', 'xbootldr']);

export interface PartitionFlags {
  noAuto: boolean;
  readOnly: boolean;
  growFileSystem: boolean;
}

export function partitionFlags(designator: Designator, attributes: bigint): PartitionFlags {
  const readOnly = honoursReadOnly.has(designator) && (attributes & GPT_FLAG_READ_ONLY) !== 0n;
  return {
    noAuto: honoursNoAuto.has(designator) && (attributes & GPT_FLAG_NO_AUTO) !== 0n,
    readOnly,
    // growfs is ignored on read-only partitions (UAPI.2).
    growFileSystem: !readOnly && honoursGrowFs.has(designator) && (attributes & GPT_FLAG_GROWFS) !== 0n,
  };
}

export const isVerityDesignator = (d: Designator): boolean => d === 'root-verity' || d === 'usr-verity';
export const isSignatureDesignator = (d: Designator): boolean => d === 'root-verity-sig' || d === 'usr-verity-sig';
