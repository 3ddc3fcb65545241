// Image policies in systemd's syntax (systemd.image-policy(7), src/shared/image-policy.c):
// "designator=flag+flag:…", an empty designator sets the default for unlisted partitions, and
// "*" / "-" / "~" are allow / ignore / deny. Parsing is strict (systemd's non-graceful mode).
import { ERR, VarlinkError } from '../ipc/errors.js';
import { MountFileSystem } from '../ipc/interfaces/io.systemd.MountFileSystem.js';

import { DESIGNATORS, type Designator } from './ddi/dps.js';

export { DESIGNATORS, type Designator };

const VERITY = 1 << 0;
const SIGNED = 1 << 1;
const ENCRYPTED = 1 << 2;
const UNPROTECTED = 1 << 3;
const UNUSED = 1 << 4;
const ABSENT = 1 << 5;
const READ_ONLY_ON = 1 << 6;
const READ_ONLY_OFF = 1 << 7;
const GROWFS_ON = 1 << 8;
const GROWFS_OFF = 1 << 9;

const PROTECTION_MASK = VERITY | SIGNED | ENCRYPTED | UNPROTECTED;
const USE_MASK = PROTECTION_MASK | UNUSED | ABSENT;
const OPEN = USE_MASK;
const IGNORE = UNUSED | ABSENT;
const READ_ONLY_MASK = READ_ONLY_ON | READ_ONLY_OFF;
const GROWFS_MASK = GROWFS_ON | GROWFS_OFF;

const FILE_SYSTEMS = ['btrfs', 'erofs', 'ext4', 'f2fs', 'squashfs', 'vfat', 'xfs'] as const;
const fsFlag = (name: string): number => {
  const i = (FILE_SYSTEMS as readonly string[]).indexOf(name);
  return i < 0 ? 0 : 1 << (10 + i);
};
/** No file-system flag means any file system. */
const FSTYPE_MASK = FILE_SYSTEMS.reduce((m, f) => m | fsFlag(f), 0);

// Output order of systemd's partition_policy_flags_to_string().
const FLAG_NAMES: readonly [string, number][] = [
  ['verity', VERITY], ['signed', SIGNED], ['encrypted', ENCRYPTED], ['unprotected', UNPROTECTED],
  ['unused', UNUSED], ['absent', ABSENT],
  ['read-only-on', READ_ONLY_ON], ['read-only-off', READ_ONLY_OFF],
  ['growfs-off', GROWFS_OFF], ['growfs-on', GROWFS_ON],
  ...FILE_SYSTEMS.map((f): [string, number] => [f, fsFlag(f)]),
];
const FLAG_BY_NAME = new Map<string, number>([...FLAG_NAMES, ['open', OPEN], ['ignore', IGNORE]]);

/** Longer than any sensible policy (13 rules with every flag is ~1.5 KiB). */
const MAX_IMAGE_POLICY_LENGTH = 4096;

export type ImagePolicyErrorKind = 'syntax' | 'unknown-designator' | 'unknown-flag' | 'duplicate' | 'too-long' | 'impossible';

/**
 * A policy that cannot be used, as MountImage answers it: a malformed one is InvalidParameter
 * (imagePolicy), an intersection that allows nothing DeniedByImagePolicy. The message is for logs.
 */
export class ImagePolicyError extends VarlinkError {
  constructor(
    readonly kind: ImagePolicyErrorKind,
    message: string,
  ) {
    const impossible = kind === 'impossible';
    super(impossible ? MountFileSystem.error.DeniedByImagePolicy : ERR.InvalidParameter, impossible ? {} : { parameter: 'imagePolicy' }, message);
    this.name = 'ImagePolicyError';
  }
}

export interface ImagePolicy {
  /** Flags for designators without a rule (bitmask, as written). */
  readonly defaultFlags: number;
  readonly rules: ReadonlyMap<Designator, number>;
}

const policy = (defaultFlags: number, rules: [Designator, number][] = []): ImagePolicy => ({ defaultFlags, rules: new Map(rules) });

export const ALLOW_POLICY: ImagePolicy = policy(OPEN);
const IGNORE_POLICY: ImagePolicy = policy(IGNORE);
const DENY_POLICY: ImagePolicy = policy(ABSENT);
/** mountfsd's defaults: trusted images may use everything; untrusted ones need signed root/usr. */
export const TRUSTED_DEFAULT_POLICY = ALLOW_POLICY;
export const UNTRUSTED_DEFAULT_POLICY: ImagePolicy = policy(IGNORE, [
  ['root', SIGNED | ABSENT],
  ['usr', SIGNED | ABSENT],
]);

const VERITY_TO_DATA: Partial<Record<Designator, Designator>> = { 'root-verity': 'root', 'usr-verity': 'usr' };
const SIG_TO_DATA: Partial<Record<Designator, Designator>> = { 'root-verity-sig': 'root', 'usr-verity-sig': 'usr' };
const HAS_VERITY = new Set<Designator>(['root', 'usr']);

const WHITESPACE = /^[ \t\n\r]+|[ \t\n\r]+$/g;
const strip = (s: string): string => s.replace(WHITESPACE, '');

function isDesignator(s: string): s is Designator {
  return (DESIGNATORS as readonly string[]).includes(s);
}

function parseFlags(s: string): number {
  if (s === '' || s === '-') return 0;
  let flags = 0;
  for (const word of s.split('+')) {
    const f = FLAG_BY_NAME.get(strip(word));
    if (f === undefined) throw new ImagePolicyError('unknown-flag', `unknown partition policy flag ${JSON.stringify(strip(word))}`);
    flags |= f;
  }
  return flags;
}

/** Parses a policy string; throws ImagePolicyError. */
export function parseImagePolicy(s: string): ImagePolicy {
  if (s.length > MAX_IMAGE_POLICY_LENGTH) throw new ImagePolicyError('too-long', `image policy longer than ${MAX_IMAGE_POLICY_LENGTH} characters`);
  if (s === '' || s === '-') return IGNORE_POLICY;
  if (s === '*') return ALLOW_POLICY;
  if (s === '~') return DENY_POLICY;

  let defaultFlags: number | undefined;
  const rules: [Designator, number][] = [];
  for (const rule of s.split(':')) {
    const eq = rule.indexOf('=');
    if (eq < 0) throw new ImagePolicyError('syntax', `expected designator=flags, got ${JSON.stringify(rule)}`);
    const name = strip(rule.slice(0, eq));
    const flags = parseFlags(strip(rule.slice(eq + 1)));
    if (name === '') {
      if (defaultFlags !== undefined) throw new ImagePolicyError('duplicate', 'default partition policy given more than once');
      defaultFlags = flags;
    } else if (!isDesignator(name)) {
      throw new ImagePolicyError('unknown-designator', `unknown partition designator ${JSON.stringify(name)}`);
    } else if (rules.some(([d]) => d === name)) {
      throw new ImagePolicyError('duplicate', `partition designator ${name} given more than once`);
    } else {
      rules.push([name, flags]);
    }
  }
  return policy(defaultFlags ?? IGNORE, rules);
}

/** Unspecified parts of a flags field mean "any". */
function extend(flags: number): number {
  if ((flags & USE_MASK) === 0) flags |= OPEN;
  if ((flags & READ_ONLY_MASK) === 0) flags |= READ_ONLY_MASK;
  if ((flags & GROWFS_MASK) === 0) flags |= GROWFS_MASK;
  return flags;
}

/** The reverse of extend(): drop parts that allow everything. */
function reduce(flags: number): number {
  if ((flags & USE_MASK) === USE_MASK) flags &= ~USE_MASK;
  if ((flags & READ_ONLY_MASK) === READ_ONLY_MASK) flags &= ~READ_ONLY_MASK;
  if ((flags & GROWFS_MASK) === GROWFS_MASK) flags &= ~GROWFS_MASK;
  return flags;
}

/** Fills in unspecified parts and masks bits that make no sense for the designator. */
function normalized(flags: number, d: Designator): number {
  flags = extend(flags);
  // Verity and signature partitions are the protection; they need none themselves.
  if (VERITY_TO_DATA[d] || SIG_TO_DATA[d]) flags &= ~(VERITY | SIGNED | ENCRYPTED);
  if (!HAS_VERITY.has(d)) flags &= ~(VERITY | SIGNED);
  if ((flags & USE_MASK) === ABSENT) flags &= ~(READ_ONLY_MASK | GROWFS_MASK);
  return flags;
}

/** systemd's image_policy_get(): explicit rule, or derived from the data partition for verity/sig. */
function ruleFlags(p: ImagePolicy, d: Designator): number | undefined {
  const own = p.rules.get(d);
  if (own !== undefined) return normalized(own, d);
  const data = VERITY_TO_DATA[d] ?? SIG_TO_DATA[d];
  if (data === undefined) return undefined;
  const df = ruleFlags(p, data);
  const needed = VERITY_TO_DATA[d] ? SIGNED | VERITY : SIGNED;
  if (df === undefined || (df & needed) === 0) return undefined;
  return normalized(UNPROTECTED | (df & (UNUSED | ABSENT | READ_ONLY_MASK | GROWFS_MASK)), d);
}

/** Effective flags for a designator (systemd's image_policy_get_exhaustively()). */
function effectiveFlags(p: ImagePolicy, d: Designator): number {
  return ruleFlags(p, d) ?? normalized(p.defaultFlags, d);
}

/**
 * A rule can be left out if the designator's effective flags stay the same without it. Never for
 * root/usr: their rules also shape the policies derived for their verity partitions.
 */
function redundant(p: ImagePolicy, d: Designator, flags: number): boolean {
  if (HAS_VERITY.has(d)) return false;
  const rules = new Map(p.rules);
  rules.delete(d);
  return normalized(flags, d) === effectiveFlags({ defaultFlags: p.defaultFlags, rules }, d);
}

/** Same effect for every designator. */
export function equivalentPolicies(a: ImagePolicy, b: ImagePolicy): boolean {
  return extend(a.defaultFlags) === extend(b.defaultFlags) && DESIGNATORS.every((d) => effectiveFlags(a, d) === effectiveFlags(b, d));
}

/** Spells the extended flags: "open" is implied by other words, and stands alone instead of the ambiguous "-". */
function flagsToString(raw: number): string {
  const flags = extend(raw);
  const words: string[] = [];
  const use = flags & USE_MASK;
  if (use === IGNORE) words.push('ignore');
  else if (use !== OPEN) for (const [name, bit] of FLAG_NAMES) if (bit & USE_MASK && flags & bit) words.push(name);
  for (const mask of [READ_ONLY_MASK, GROWFS_MASK]) {
    // both or neither set both mean "don't care"
    if ((flags & mask) !== mask) for (const [name, bit] of FLAG_NAMES) if (bit & mask && flags & bit) words.push(name);
  }
  for (const [name, bit] of FLAG_NAMES) if (bit & FSTYPE_MASK && flags & bit) words.push(name);
  return words.length ? words.join('+') : 'open';
}

/** Canonical, simplified form (like systemd's image_policy_to_string(simplify=true)). */
export function formatImagePolicy(p: ImagePolicy): string {
  if (equivalentPolicies(p, ALLOW_POLICY)) return '*';
  if (equivalentPolicies(p, IGNORE_POLICY)) return '-';
  if (equivalentPolicies(p, DENY_POLICY)) return '~';
  const parts: string[] = [];
  for (const d of DESIGNATORS) {
    const flags = p.rules.get(d);
    if (flags !== undefined && !redundant(p, d, flags)) parts.push(`${d}=${flagsToString(flags)}`);
  }
  if (extend(p.defaultFlags) !== extend(IGNORE)) parts.push(`=${flagsToString(p.defaultFlags)}`);
  return parts.length ? parts.join(':') : '-';
}

/**
 * Intersects two masks of extended flags. File-system sets treat "none" as "any". If no file
 * system, read-only or growfs setting satisfies both, the partition cannot be used, only be
 * unused or absent.
 */
function intersectFlags(x: number, y: number): number {
  let z = x & y & ~FSTYPE_MASK;
  const xf = x & FSTYPE_MASK;
  const yf = y & FSTYPE_MASK;
  const fs = xf === 0 ? yf : yf === 0 ? xf : xf & yf;
  const present = (z & PROTECTION_MASK) !== 0;
  if (present && ((xf && yf && fs === 0) || (z & READ_ONLY_MASK) === 0 || (z & GROWFS_MASK) === 0)) z &= ~PROTECTION_MASK;
  return z | fs;
}

/** What both policies allow (systemd's image_policy_intersect()); throws ImagePolicyError('impossible') if some partition could be neither used, unused nor absent. */
export function intersectImagePolicies(a: ImagePolicy, b: ImagePolicy): ImagePolicy {
  const def = intersectFlags(extend(a.defaultFlags), extend(b.defaultFlags));
  if ((def & USE_MASK) === 0) throw new ImagePolicyError('impossible', 'image policies leave nothing allowed for unlisted partitions');
  const result = { defaultFlags: reduce(def), rules: new Map<Designator, number>() };
  // Designators in DESIGNATORS order, so root/usr rules exist before their verity partitions are
  // checked for redundancy. Derived verity rules count as rules: without them the result could be
  // more permissive for a verity partition than one of the inputs.
  for (const d of DESIGNATORS) {
    if (ruleFlags(a, d) === undefined && ruleFlags(b, d) === undefined) continue;
    const z = intersectFlags(effectiveFlags(a, d), effectiveFlags(b, d));
    if ((z & USE_MASK) === 0) throw new ImagePolicyError('impossible', `image policies leave nothing allowed for partition ${d}`);
    if (!redundant(result, d, z)) result.rules.set(d, reduce(z));
  }
  return result;
}

export type Protection = 'signed' | 'verity' | 'encrypted' | 'unprotected';
/** What a partition of the image offers. */
export type PartitionState = Protection | 'absent';

export interface PartitionAttributes {
  /** GPT read-only flag. */
  readOnly?: boolean;
  /** GPT growfs flag. */
  growFileSystem?: boolean;
  fileSystem?: string;
}

export type Verdict =
  /** Mount it, with this protection (may be weaker than offered: a signed partition can be used as plain verity). */
  | { verdict: 'use'; as: Protection }
  /** Absent and allowed to be, or present and allowed to stay unused. */
  | { verdict: 'skip' }
  | { verdict: 'deny'; reason: string };

const PROTECTION_BIT: Record<Protection, number> = { signed: SIGNED, verity: VERITY, encrypted: ENCRYPTED, unprotected: UNPROTECTED };
// Anything that qualifies for a signature also qualifies for verity, and for unprotected use.
const LADDER: Record<Protection, Protection[]> = {
  signed: ['signed', 'verity', 'unprotected'],
  verity: ['verity', 'unprotected'],
  encrypted: ['encrypted'],
  unprotected: ['unprotected'],
};

/** Decides what to do with one partition of an image under `p`. */
export function evaluatePartition(p: ImagePolicy, d: Designator, state: PartitionState, attrs: PartitionAttributes = {}): Verdict {
  const f = effectiveFlags(p, d);
  if (state === 'absent') return f & ABSENT ? { verdict: 'skip' } : { verdict: 'deny', reason: `partition ${d} is required by the image policy but missing` };
  const as = LADDER[state].find((level) => f & PROTECTION_BIT[level]);
  let why: string | undefined;
  if (as === undefined) why = `a${state === 'unprotected' || state === 'encrypted' ? 'n' : ''} ${state} ${d} partition`;
  else if (attrs.readOnly !== undefined && !(f & (attrs.readOnly ? READ_ONLY_ON : READ_ONLY_OFF))) why = `partition ${d} with read-only ${attrs.readOnly ? 'on' : 'off'}`;
  else if (attrs.growFileSystem !== undefined && !(f & (attrs.growFileSystem ? GROWFS_ON : GROWFS_OFF))) why = `partition ${d} with growfs ${attrs.growFileSystem ? 'on' : 'off'}`;
  else if (attrs.fileSystem !== undefined && f & FSTYPE_MASK && !(f & fsFlag(attrs.fileSystem))) why = `file system ${attrs.fileSystem} on partition ${d}`;
  if (as !== undefined && why === undefined) return { verdict: 'use', as };
  if (f & UNUSED) return { verdict: 'skip' };
  return { verdict: 'deny', reason: `image policy does not allow ${why}` };
}
