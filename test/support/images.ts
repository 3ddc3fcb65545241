// Builds test disk images with the real tools (systemd-repart, sfdisk, mkfs.*, veritysetup,
// openssl, `mountgate build`). Everything lands in one temp dir per test run; call
// removeImages() in after(). Test directories uid 1000 can read images from (testDir, publish).
import { execFileSync, type ExecFileSyncOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Architecture, type Designator, typeUuidOf } from '../../src/mntfsd/ddi/dps.js';
import { REPO } from './processes.js';

let dir: string | null = null;
const cache = new Map<string, unknown>();

export function imageDir(): string {
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'mountgate-images-'));
  return dir;
}

export function removeImages(): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = null;
  cache.clear();
}

/** Runs a tool; on failure the error carries the tail of its stderr. */
export function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 16 << 20 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr ?? e.message).slice(-2000)}`);
  }
}

function cached<T>(key: string, build: () => T): T {
  if (!cache.has(key)) cache.set(key, build());
  return cache.get(key) as T;
}

/** A small tree with a file owned by root and one by 1000 (for later mount tests). */
export function sampleTree(): string {
  return cached('tree', () => {
    const t = path.join(imageDir(), 'tree');
    fs.mkdirSync(path.join(t, 'usr/lib'), { recursive: true });
    fs.mkdirSync(path.join(t, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(t, 'usr/lib/os-release'), 'ID=mountgate-test\n');
    fs.writeFileSync(path.join(t, 'etc/hello'), 'hello\n');
    fs.writeFileSync(path.join(t, 'etc/user-file'), 'owned by 1000\n');
    fs.chownSync(path.join(t, 'etc/user-file'), 1000, 1000);
    // Incompressible, deterministic bulk so hash trees get several levels.
    const bulk = Buffer.alloc(1 << 20);
    for (let i = 0, x = 0x9e3779b9; i < bulk.length; i += 4) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      bulk.writeUInt32LE(x, i);
    }
    fs.writeFileSync(path.join(t, 'usr/lib/bulk'), bulk);
    return t;
  });
}

/** Self-signed test certificate and key (PEM paths). */
export function testKey(): { key: string; cert: string } {
  return cached('key', () => {
    const key = path.join(imageDir(), 'verity.key');
    const cert = path.join(imageDir(), 'verity.crt');
    run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '365', '-subj', '/CN=mountgate test']);
    return { key, cert };
  });
}

export type FsKind = 'ext4' | 'erofs' | 'squashfs' | 'btrfs' | 'xfs' | 'swap';

/** A file-system image of `kind` holding sampleTree() (swap: an empty swap area). */
export function makeFileSystem(kind: FsKind): string {
  return cached(`fs-${kind}`, () => {
    const out = path.join(imageDir(), `fs.${kind}`);
    const tree = sampleTree();
    const sized = (mib: number): void => {
      fs.writeFileSync(out, Buffer.alloc(0));
      fs.truncateSync(out, mib << 20);
    };
    switch (kind) {
      case 'ext4':
        sized(8);
        run('mkfs.ext4', ['-q', '-d', tree, out]);
        break;
      case 'erofs':
        run('mkfs.erofs', [out, tree]);
        break;
      case 'squashfs':
        run('mksquashfs', [tree, out, '-noappend', '-quiet']);
        break;
      case 'btrfs':
        sized(120);
        run('mkfs.btrfs', ['-q', '--rootdir', tree, out]);
        break;
      case 'xfs':
        sized(300);
        run('mkfs.xfs', ['-q', out]);
        break;
      case 'swap':
        sized(1);
        run('mkswap', ['-q', out]);
        break;
    }
    return out;
  });
}

export interface VerityFiles {
  hash: string;
  rootHash: string;
}

/** `veritysetup format` of `data` into a new hash file. */
export function verityFormat(data: string, dataBlockSize: number, hashBlockSize: number): VerityFiles {
  return cached(`verity-${data}-${dataBlockSize}-${hashBlockSize}`, () => {
    const hash = `${data}.verity-${dataBlockSize}-${hashBlockSize}`;
    const out = run('veritysetup', ['format', `--data-block-size=${dataBlockSize}`, `--hash-block-size=${hashBlockSize}`, data, hash]);
    const m = /Root hash:\s+([0-9a-f]{64})/.exec(out);
    if (!m) throw new Error(`no root hash in veritysetup output: ${out}`);
    return { hash, rootHash: m[1]! };
  });
}

export interface HandPartition {
  designator: Designator;
  architecture?: Architecture | null;
  /** File whose contents fill the partition (size rounded up to 1 MiB). */
  file: string;
  uuid?: string;
  label?: string;
  /** GPT attribute bits as sfdisk spells them, e.g. "GUID:60". */
  attrs?: string;
}

const MIB = 1 << 20;
const uuidOf = (hex: string): string => `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;

/** Partition UUIDs a Verity data/hash pair gets from its root hash (UAPI.2 Discoverable Partitions Specification). */
export function verityUuids(rootHash: string): { data: string; hash: string } {
  return { data: uuidOf(rootHash.slice(0, 32)), hash: uuidOf(rootHash.slice(32, 64)) };
}

/**
 * Lays the files out in a GPT image with sfdisk. 4096-byte sectors need a loop device with
 * that logical block size (util-linux 2.38's sfdisk cannot set it for a plain file).
 */
export function gptImage(name: string, parts: HandPartition[], sectorSize: 512 | 4096 = 512): string {
  const img = path.join(imageDir(), name);
  let pos = MIB;
  const lines: string[] = [];
  const layout: Array<{ file: string; offset: number }> = [];
  for (const p of parts) {
    const size = Math.ceil(fs.statSync(p.file).size / MIB) * MIB;
    const type = typeUuidOf(p.designator, p.architecture === undefined ? 'x86-64' : p.architecture);
    if (!type) throw new Error(`no type UUID for ${p.designator}`);
    const fields = [`start=${pos / sectorSize}`, `size=${size / sectorSize}`, `type=${type}`];
    if (p.uuid) fields.push(`uuid=${p.uuid}`);
    fields.push(`name="${p.label ?? p.designator}"`);
    if (p.attrs) fields.push(`attrs="${p.attrs}"`);
    lines.push(fields.join(', '));
    layout.push({ file: p.file, offset: pos });
    pos += size;
  }
  fs.writeFileSync(img, Buffer.alloc(0));
  fs.truncateSync(img, pos + MIB);
  const script = `label: gpt\n\n${lines.join('\n')}\n`;
  if (sectorSize === 512) {
    run('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', img], script);
  } else {
    const loop = run('losetup', ['--sector-size', '4096', '--find', '--show', img]).trim();
    try {
      run('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', loop], script);
    } finally {
      run('losetup', ['-d', loop]);
    }
  }
  const fd = fs.openSync(img, 'r+');
  try {
    for (const l of layout) fs.writeSync(fd, fs.readFileSync(l.file), 0, undefined, l.offset);
  } finally {
    fs.closeSync(fd);
  }
  return img;
}

/** A DDI by hand: a file system, its Verity hash partition, no signature. */
export function handVerityImage(kind: FsKind, opts: { sectorSize?: 512 | 4096; dataBlockSize?: number; hashBlockSize?: number } = {}) {
  const ss = opts.sectorSize ?? 512;
  const dbs = opts.dataBlockSize ?? 4096;
  const hbs = opts.hashBlockSize ?? 4096;
  return cached(`hand-${kind}-${ss}-${dbs}-${hbs}`, () => {
    const data = makeFileSystem(kind);
    const v = verityFormat(data, dbs, hbs);
    const u = verityUuids(v.rootHash);
    const img = gptImage(`hand-${kind}-${ss}-${dbs}-${hbs}.raw`, [
      { designator: 'root', file: data, uuid: u.data, label: 'root_1.0' },
      { designator: 'root-verity', file: v.hash, uuid: u.hash, label: 'root_1.0-verity', attrs: 'GUID:60' },
    ], ss);
    return { path: img, rootHash: v.rootHash };
  });
}

export interface RepartImage {
  path: string;
  rootHash: string;
}

/** A signed DDI (data + verity + verity-sig) built by systemd-repart. */
export function repartImage(format: 'squashfs' | 'ext4'): RepartImage {
  return cached(`repart-${format}`, () => {
    const defs = path.join(imageDir(), `repart-${format}.d`);
    fs.mkdirSync(defs);
    const common = 'VerityMatchKey=root\n';
    fs.writeFileSync(path.join(defs, '10-root.conf'), `[Partition]\nType=root\nFormat=${format}\nCopyFiles=${sampleTree()}:/\nVerity=data\n${common}`);
    fs.writeFileSync(path.join(defs, '20-verity.conf'), `[Partition]\nType=root-verity\nVerity=hash\n${common}`);
    fs.writeFileSync(path.join(defs, '30-sig.conf'), `[Partition]\nType=root-verity-sig\nVerity=signature\n${common}`);
    const img = path.join(imageDir(), `repart-${format}.raw`);
    const { key, cert } = testKey();
    const out = run('systemd-repart', [
      `--definitions=${defs}`, '--empty=create', '--size=auto', '--dry-run=no', '--json=short',
      `--private-key=${key}`, `--certificate=${cert}`, img,
    ]);
    const parts = JSON.parse(out) as Array<{ roothash: string | null }>;
    const rootHash = parts.find((p) => p.roothash)?.roothash;
    if (!rootHash) throw new Error('systemd-repart reported no root hash');
    return { path: img, rootHash };
  });
}

export interface DissectJson {
  mounts: Array<{ designator: string; partition_uuid: string; partition_label: string; fstype: string | null; architecture: string | null; partno: number; rw: string; growfs: boolean }>;
}

export function systemdDissect(img: string): DissectJson {
  return JSON.parse(run('systemd-dissect', ['--json=short', img])) as DissectJson;
}

/** A copy of `src` with one byte XORed at `offset` (a fresh file each call). */
export function flipped(src: string, offset: number, name: string): string {
  const out = path.join(imageDir(), name);
  fs.copyFileSync(src, out);
  const fd = fs.openSync(out, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b.writeUInt8(b.readUInt8(0) ^ 0x01, 0);
    fs.writeSync(fd, b, 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** DIR/verity.d holding the test key's certificate (testKey), for mntfsd's --verity-certs. */
export function testCertDir(dir: string): string {
  const certs = path.join(dir, 'verity.d');
  fs.mkdirSync(certs);
  fs.copyFileSync(testKey().cert, path.join(certs, 'test.crt'));
  return certs;
}

/** A private test directory that uid 1000 can traverse. */
export function testDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  return dir;
}

/** A copy of `src` at `dir/name`, world-readable, owned by `owner`. */
export function publish(src: string, dir: string, name: string, owner = 0): string {
  const out = path.join(dir, name);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.copyFileSync(src, out);
  fs.chmodSync(out, 0o644);
  fs.chownSync(out, owner, owner);
  return out;
}

export interface SignedImages {
  /** A directory holding the trusted key's certificate, trusted.crt (for --verity-certs). */
  certs: string;
  /** Image signed by that key. */
  trusted: string;
  /** Image signed by a key whose certificate is nowhere. */
  untrusted: string;
}

/** Builds two images of TREE in DIR with `mountgate build` (keys CN=trusted and CN=untrusted), readable by uid 1000. */
export function buildSignedImages(tree: string, dir: string): SignedImages {
  const keys = fs.mkdtempSync(path.join(dir, 'keys-'));
  const images: SignedImages = { certs: path.join(dir, 'certs'), trusted: path.join(dir, 'trusted.raw'), untrusted: path.join(dir, 'untrusted.raw') };
  const quiet: ExecFileSyncOptions = { stdio: ['ignore', 'ignore', 'pipe'] };
  for (const cn of ['trusted', 'untrusted'] as const) {
    const key = path.join(keys, `${cn}.key`);
    const cert = path.join(keys, `${cn}.crt`);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=${cn}`], quiet);
    execFileSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/cli/main.ts'), 'build', tree, images[cn], '--key', key, '--cert', cert], quiet);
    fs.chmodSync(images[cn], 0o644);
  }
  fs.mkdirSync(images.certs);
  fs.copyFileSync(path.join(keys, 'trusted.crt'), path.join(images.certs, 'trusted.crt'));
  return images;
}
