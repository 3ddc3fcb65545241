// Trust by location (mountfsd's trusted directories, off by default): an image fd is trusted if it
// is a regular file directly inside a configured directory, proven by re-opening that name without
// following symlinks and finding the very same inode. Then picks the image policy that applies.
import fs from 'node:fs';
import path from 'node:path';
import { fdStat } from '../sys/stat.js';
import {
  TRUSTED_DEFAULT_POLICY,
  UNTRUSTED_DEFAULT_POLICY,
  intersectImagePolicies,
  parseImagePolicy,
  type ImagePolicy,
} from './image-policy.js';

export type TrustResult =
  | { trusted: true; path: string; directory: string }
  | { trusted: false; reason: string };

const untrusted = (reason: string): TrustResult => ({ trusted: false, reason });

/**
 * Decides whether `fd` is an image in one of `directories` (an empty list disables trust by
 * location). Never throws for anything about the fd; every doubt means untrusted.
 */
export function checkTrustedImage(fd: number, directories: readonly string[]): TrustResult {
  if (directories.length === 0) return untrusted('trusted directories are disabled');
  const st = fdStat(fd);
  if (!st.isFile) return untrusted('not a regular file');

  let where: string;
  try {
    where = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch (err) {
    return untrusted(`cannot resolve the fd's path: ${(err as Error).message}`);
  }
  // An unlinked file reads back as "… (deleted)"; a file on a mount outside our root does not start with "/".
  if (!path.isAbsolute(where) || where.endsWith(' (deleted)')) return untrusted(`fd path ${JSON.stringify(where)} is not a live file name`);
  const name = path.basename(where);
  const parent = path.dirname(where);

  for (const dir of directories) {
    let real: string;
    try {
      real = fs.realpathSync(dir);
    } catch {
      continue;
    }
    if (real !== parent) continue;
    let again: number;
    try {
      again = fs.openSync(path.join(real, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
    } catch (err) {
      return untrusted(`cannot re-open ${where}: ${(err as Error).message}`);
    }
    try {
      const st2 = fdStat(again);
      if (!st2.isFile || st2.dev !== st.dev || st2.ino !== st.ino) return untrusted(`${where} is no longer the file passed in`);
    } finally {
      fs.closeSync(again);
    }
    return { trusted: true, path: where, directory: real };
  }
  return untrusted(`${where} is not directly inside a trusted directory`);
}

export interface PolicyDefaults {
  /** Default: allow everything ("*"). */
  trusted?: ImagePolicy;
  /** Default: "root=signed+absent:usr=signed+absent". */
  untrusted?: ImagePolicy;
}

/**
 * The policy for one MountImage call: the daemon's default for trusted or untrusted images,
 * narrowed by the caller's `imagePolicy` if given. Throws ImagePolicyError (a malformed caller
 * policy, or an intersection that allows nothing).
 */
export function effectiveImagePolicy(trusted: boolean, callerPolicy: string | undefined, defaults: PolicyDefaults = {}): ImagePolicy {
  const base = trusted ? (defaults.trusted ?? TRUSTED_DEFAULT_POLICY) : (defaults.untrusted ?? UNTRUSTED_DEFAULT_POLICY);
  return callerPolicy === undefined ? base : intersectImagePolicies(base, parseImagePolicy(callerPolicy));
}
