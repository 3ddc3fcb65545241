// The DDI builder checked by the peer tools: veritysetup, openssl, sfdisk, systemd-dissect,
// fsck.erofs. Needs root for systemd-dissect (loop devices).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VerityTreeBuilder, verityHashDeviceSize } from '../../src/image-builder/verity-writer.js';
import { loadSigningIdentity, signRootHash, signaturePartition } from '../../src/image-builder/signature-writer.js';
import { buildDdi } from '../../src/image-builder/build-ddi.js';

const REPO = path.resolve(import.meta.dirname, '../..');
const X86_64 = {
  root: '4f68bce3-e8cd-4db1-96e7-fbcaf984b709',
  verity: '2c7357ed-ebd2-46d9-aec1-23d437ec2bf5',
  sig: '41092b05-9fc8-4523-994f-2def0408b176',
};

let dir: string;
const p = (name: string): string => path.join(dir, name);
const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

function makeCert(kind: 'rsa' | 'ec', prefix: string): void {
  const newkey = kind === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
  sh('openssl', ['req', '-x509', ...newkey, '-nodes', '-keyout', p(`${prefix}.key`), '-out', p(`${prefix}.crt`), '-days', '2', '-subj', `/CN=${prefix}`]);
}

interface SfdiskPartition {
  start: number;
  size: number;
  type: string;
  uuid: string;
  name: string;
  attrs?: string;
}

function partitions(image: string): SfdiskPartition[] {
  const j = JSON.parse(sh('sfdisk', ['-J', image])) as { partitiontable: { sectorsize: number; partitions: SfdiskPartition[] } };
  assert.equal(j.partitiontable.sectorsize, 512);
  return j.partitiontable.partitions;
}

function extract(image: string, part: SfdiskPartition, out: string): void {
  const fd = fs.openSync(image, 'r');
  try {
    const buf = Buffer.alloc(part.size * 512);
    assert.equal(fs.readSync(fd, buf, 0, buf.length, part.start * 512), buf.length);
    fs.writeFileSync(out, buf);
  } finally {
    fs.closeSync(fd);
  }
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', p('runner.mts'), ...args], { cwd: REPO, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-build-test-'));
  makeCert('rsa', 'rsa');
  makeCert('ec', 'ec');
  const src = p('src');
  fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(src, 'usr/lib'), { recursive: true });
  fs.writeFileSync(path.join(src, 'usr/lib/os-release'), 'ID=mountgate-test\n');
  fs.writeFileSync(path.join(src, 'etc/hello.txt'), 'hello from the image\n');
  // Incompressible and > 128 blocks, so the hash tree has two levels.
  fs.writeFileSync(path.join(src, 'big.bin'), crypto.randomBytes(600 * 1024));
  fs.symlinkSync('../usr/lib/os-release', path.join(src, 'etc/os-release'));
  fs.writeFileSync(
    p('runner.mts'),
    `import { buildCommand } from ${JSON.stringify(path.join(REPO, 'src/cli/build.ts'))};\nprocess.exitCode = await buildCommand(process.argv.slice(2));\n`,
  );
});

after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('verity writer', () => {
  it('writes the same hash device and root hash as veritysetup format', () => {
    const salt = crypto.randomBytes(32);
    const uuid = crypto.randomUUID();
    // 1 block (no tree), 2, 128 (one full hash block), 129 (two levels).
    for (const blocks of [1, 2, 128, 129]) {
      const data = crypto.randomBytes(blocks * 4096);
      fs.writeFileSync(p('vdata'), data);
      fs.rmSync(p('vhash'), { force: true });
      const out = sh('veritysetup', ['format', p('vdata'), p('vhash'), `--salt=${salt.toString('hex')}`, `--uuid=${uuid}`,
        '--hash=sha256', '--format=1', '--data-block-size=4096', '--hash-block-size=4096']);
      const b = new VerityTreeBuilder(salt, blocks);
      b.update(data.subarray(0, 4096));
      b.update(data.subarray(4096));
      const r = b.finish(uuid);
      assert.equal(r.rootHash.toString('hex'), /Root hash:\s+([0-9a-f]+)/.exec(out)?.[1], `root hash, ${blocks} blocks`);
      assert.ok(fs.readFileSync(p('vhash')).equals(r.hashDevice), `hash device bytes, ${blocks} blocks`);
      assert.equal(verityHashDeviceSize(blocks), r.hashDevice.length);
    }
  });

  it('refuses partial blocks and a wrong block count', () => {
    const b = new VerityTreeBuilder(Buffer.alloc(32, 1), 2);
    assert.throws(() => b.update(Buffer.alloc(100)), /whole blocks/);
    b.update(Buffer.alloc(4096));
    assert.throws(() => b.finish(crypto.randomUUID()), /1 of 2/);
  });
});

describe('signature writer', () => {
  const hash = crypto.randomBytes(32).toString('hex');

  it('RSA: byte-identical to openssl smime -sign -binary -noattr', () => {
    const id = loadSigningIdentity(fs.readFileSync(p('rsa.key'), 'utf8'), fs.readFileSync(p('rsa.crt'), 'utf8'));
    fs.writeFileSync(p('rh.txt'), hash);
    sh('openssl', ['smime', '-sign', '-in', p('rh.txt'), '-inkey', p('rsa.key'), '-signer', p('rsa.crt'), '-binary', '-noattr', '-outform', 'der', '-out', p('ref.p7s')]);
    assert.ok(signRootHash(hash, id).equals(fs.readFileSync(p('ref.p7s'))));
  });

  it('ECDSA: openssl verifies it; the partition is NUL-padded JSON of 16 KiB', () => {
    const id = loadSigningIdentity(fs.readFileSync(p('ec.key'), 'utf8'), fs.readFileSync(p('ec.crt'), 'utf8'));
    const part = signaturePartition(hash, id);
    assert.equal(part.length, 16384);
    const text = part.toString('utf8').replace(/\0+$/, '');
    assert.ok(part.subarray(Buffer.byteLength(text)).every((b) => b === 0));
    const j = JSON.parse(text) as { rootHash: string; certificateFingerprint: string; signature: string };
    assert.deepEqual(Object.keys(j), ['rootHash', 'certificateFingerprint', 'signature']);
    assert.equal(j.rootHash, hash);
    fs.writeFileSync(p('rh.txt'), hash);
    fs.writeFileSync(p('ec.p7s'), Buffer.from(j.signature, 'base64'));
    sh('openssl', ['smime', '-verify', '-binary', '-inform', 'DER', '-in', p('ec.p7s'), '-content', p('rh.txt'), '-CAfile', p('ec.crt'), '-purpose', 'any', '-out', '/dev/null']);
  });

  it('rejects a key that does not match the certificate, and garbage PEM', () => {
    assert.throws(() => loadSigningIdentity(fs.readFileSync(p('ec.key'), 'utf8'), fs.readFileSync(p('rsa.crt'), 'utf8')), /does not belong/);
    assert.throws(() => loadSigningIdentity('nope', fs.readFileSync(p('rsa.crt'), 'utf8')), /cannot read the private key/);
    assert.throws(() => loadSigningIdentity(fs.readFileSync(p('rsa.key'), 'utf8'), 'nope'), /cannot read the certificate/);
  });
});

describe('buildDdi', () => {
  let rootHash: string;
  let parts: SfdiskPartition[];
  const image = (): string => p('image.raw');

  before(async () => {
    const progress: number[] = [];
    const r = await buildDdi({
      sourceDir: p('src'),
      output: image(),
      keyPem: fs.readFileSync(p('rsa.key'), 'utf8'),
      certPem: fs.readFileSync(p('rsa.crt'), 'utf8'),
      onProgress: (done, total) => progress.push(done / total),
    });
    rootHash = r.rootHash;
    assert.match(rootHash, /^[0-9a-f]{64}$/);
    assert.equal(r.size, fs.statSync(image()).size);
    assert.equal(progress.at(-1), 1);
    parts = partitions(image());
  });

  it('has a valid GPT with root, root-verity and root-verity-sig named by the root hash', () => {
    assert.match(sh('sfdisk', ['--verify', image()]), /No errors detected/);
    assert.deepEqual(parts.map((x) => [x.type.toLowerCase(), x.name, x.attrs]), [
      [X86_64.root, 'root-x86-64', 'GUID:60'],
      [X86_64.verity, 'root-x86-64-verity', 'GUID:60'],
      [X86_64.sig, 'root-x86-64-verity-sig', 'GUID:60'],
    ]);
    // systemd-repart's rule: the two halves of the root hash, verbatim.
    assert.equal(parts[0]!.uuid.toLowerCase().replaceAll('-', ''), rootHash.slice(0, 32));
    assert.equal(parts[1]!.uuid.toLowerCase().replaceAll('-', ''), rootHash.slice(32));
    for (const x of parts) assert.equal((x.start * 512) % 4096, 0, `${x.name} 4 KiB aligned`);
  });

  // systemd 252 says "signed" when a matching signature partition is present: it does not
  // check the signature for --json (a corrupted rootHash in the JSON still shows "signed"),
  // and activating it needs dm-verity, so the signature itself is checked with openssl below.
  it('systemd-dissect finds a signed-verity erofs root', { skip: process.getuid?.() !== 0 && 'needs root' }, () => {
    const j = JSON.parse(sh('systemd-dissect', ['--json=short', image()])) as {
      osRelease?: string[];
      mounts: { designator: string; fstype: string; verity: string | null; partition_uuid: string }[];
    };
    const by = new Map(j.mounts.map((m) => [m.designator, m]));
    assert.equal(by.get('root')?.fstype, 'erofs');
    assert.equal(by.get('root')?.verity, 'signed');
    assert.equal(by.get('root-verity')?.fstype, 'DM_verity_hash');
    assert.equal(by.get('root-verity-sig')?.fstype, 'verity_hash_signature');
    assert.deepEqual(j.osRelease, ['ID=mountgate-test']);
  });

  it('veritysetup verify accepts the data and hash partitions', () => {
    extract(image(), parts[0]!, p('data.img'));
    extract(image(), parts[1]!, p('hash.img'));
    sh('veritysetup', ['verify', p('data.img'), p('hash.img'), rootHash, '--hash-offset=0']);
    const dump = sh('veritysetup', ['dump', p('hash.img')]);
    assert.match(dump, /Hash type:\s+1/);
    assert.match(dump, /Data block size:\s+4096/);
    assert.match(dump, /Hash block size:\s+4096/);
    assert.match(dump, /Hash algorithm:\s+sha256/);
    assert.match(dump, /Salt:\s+[0-9a-f]{64}\n/);
    assert.ok(Number(/Data blocks:\s+(\d+)/.exec(dump)?.[1]) > 128, 'a two-level tree');
    // A flipped data byte must fail verification.
    const data = fs.readFileSync(p('data.img'));
    data[100] ^= 1;
    fs.writeFileSync(p('data.img'), data);
    assert.notEqual(spawnSync('veritysetup', ['verify', p('data.img'), p('hash.img'), rootHash]).status, 0);
  });

  it('the signature partition carries a root-hash signature openssl accepts', () => {
    extract(image(), parts[2]!, p('sig.img'));
    const j = JSON.parse(fs.readFileSync(p('sig.img'), 'utf8').replace(/\0+$/, '')) as Record<string, string>;
    assert.equal(j.rootHash, rootHash);
    const der = execFileSync('openssl', ['x509', '-in', p('rsa.crt'), '-outform', 'DER']);
    assert.equal(j.certificateFingerprint, crypto.createHash('sha256').update(der).digest('hex'));
    fs.writeFileSync(p('rh.txt'), rootHash);
    fs.writeFileSync(p('img.p7s'), Buffer.from(j.signature!, 'base64'));
    const args = (cert: string): string[] => ['cms', '-verify', '-binary', '-inform', 'DER', '-in', p('img.p7s'), '-content', p('rh.txt'), '-CAfile', cert, '-purpose', 'any', '-out', '/dev/null'];
    sh('openssl', args(p('rsa.crt')));
    assert.notEqual(spawnSync('openssl', args(p('ec.crt'))).status, 0, 'another CA must not verify');
  });

  it('the root partition is an erofs with the directory\'s files', () => {
    extract(image(), parts[0]!, p('root.img'));
    const out = p('extracted');
    sh('fsck.erofs', [`--extract=${out}`, p('root.img')]);
    assert.equal(fs.readFileSync(path.join(out, 'etc/hello.txt'), 'utf8'), 'hello from the image\n');
    assert.ok(fs.readFileSync(path.join(out, 'big.bin')).equals(fs.readFileSync(p('src/big.bin'))));
    assert.equal(fs.readlinkSync(path.join(out, 'etc/os-release')), '../usr/lib/os-release');
  });
});

describe('mountgate build', () => {
  it('--help exits 0 with the usage', () => {
    const r = cli(['--help']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^Usage: mountgate build DIR IMAGE --key KEY --cert CERT/);
  });

  it('usage errors exit 2', () => {
    for (const args of [[], [p('src')], [p('src'), p('x.raw'), '--key', p('rsa.key')], [p('src'), p('x.raw'), '--key', p('rsa.key'), '--cert', p('rsa.crt'), '--bogus'], [p('src'), p('x.raw'), 'extra', '--key', p('rsa.key'), '--cert', p('rsa.crt')]]) {
      const r = cli(args);
      assert.equal(r.status, 2, args.join(' '));
      assert.match(r.stderr, /Usage: mountgate build/);
    }
  });

  it('a missing key file exits 1 with a clear message and leaves no image', () => {
    const r = cli([p('src'), p('x.raw'), '--key', p('missing.key'), '--cert', p('rsa.crt')]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `mountgate build: cannot read key '${p('missing.key')}': no such file\n`);
    assert.equal(fs.existsSync(p('x.raw')), false);
  });

  it('a missing source directory exits 1', () => {
    const r = cli([p('nodir'), p('x.raw'), '--key', p('rsa.key'), '--cert', p('rsa.crt')]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot read source directory .*ENOENT/);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes('x.raw')), []);
  });

  it('an output directory that does not exist exits 1', () => {
    const r = cli([p('src'), p('nodir/x.raw'), '--key', p('rsa.key'), '--cert', p('rsa.crt')]);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `mountgate build: cannot create '${p('nodir/x.raw')}': ENOENT\n`);
  });

  it('--json prints the result; nothing on stderr when it is not a terminal', () => {
    const r = cli([p('src'), p('cli.raw'), '--key', p('ec.key'), '--cert', p('ec.crt'), '--json']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    const j = JSON.parse(r.stdout) as { image: string; rootHash: string; size: number };
    assert.equal(j.image, p('cli.raw'));
    assert.equal(j.size, fs.statSync(p('cli.raw')).size);
    assert.equal(partitions(p('cli.raw'))[0]!.uuid.toLowerCase().replaceAll('-', ''), j.rootHash.slice(0, 32));
  });

  it('draws a progress bar when stderr is a terminal', () => {
    // script(1) gives the command a pty; stdout and stderr both land in its output.
    const cmd = [process.execPath, '--import', 'tsx', p('runner.mts'), p('src'), p('tty.raw'), '--key', p('rsa.key'), '--cert', p('rsa.crt')]
      .map((a) => `'${a}'`)
      .join(' ');
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: REPO, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /hashing \[#+\] 100%/);
    assert.match(r.stdout, /Built .*tty\.raw/);
  });
});
