// Image policy strings: parsing, canonical formatting, intersection and per-partition decisions.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ALLOW_POLICY,
  DESIGNATORS,
  ImagePolicyError,
  UNTRUSTED_DEFAULT_POLICY,
  equivalentPolicies,
  evaluatePartition,
  formatImagePolicy,
  intersectImagePolicies,
  parseImagePolicy,
  type ImagePolicy,
  type ImagePolicyErrorKind,
  type PartitionState,
  type Verdict,
} from '../../src/mntfsd/image-policy.js';

const fmt = (s: string): string => formatImagePolicy(parseImagePolicy(s));
const meet = (a: string, b: string): string => formatImagePolicy(intersectImagePolicies(parseImagePolicy(a), parseImagePolicy(b)));

function throwsKind(fn: () => unknown, kind: ImagePolicyErrorKind): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ImagePolicyError, String(err));
    assert.equal(err.kind, kind, err.message);
    return true;
  });
}

describe('image policy', () => {
  it('formats canonically', () => {
    const table: [string, string][] = [
      ['*', '*'],
      ['-', '-'],
      ['', '-'],
      ['~', '~'],
      ['=open', '*'],
      ['=ignore', '-'],
      ['=unused+absent', '-'],
      ['=absent', '~'],
      ['root=signed+absent:usr=signed+absent', 'root=signed+absent:usr=signed+absent'],
      ['usr=absent+signed:root=signed+absent:=ignore', 'root=signed+absent:usr=signed+absent'],
      [' root = signed + absent ', 'root=signed+absent'],
      ['root=unprotected+verity+signed+encrypted+unused+absent', 'root=open'],
      ['root=read-only-on+read-only-off', 'root=open'],
      ['root=-', 'root=open'],
      ['root=verity+growfs-on+read-only-on', 'root=verity+read-only-on+growfs-on'],
      ['root=xfs+ext4+verity', 'root=verity+ext4+xfs'],
      ['home=unprotected:=unprotected', '=unprotected'],
      ['home=open:=unprotected', 'home=open:=unprotected'],
      ['root=read-only-on:=-', 'root=read-only-on:=open'],
      ['=signed+absent', '=signed+absent'],
    ];
    for (const [input, want] of table) assert.equal(fmt(input), want, JSON.stringify(input));
  });

  it('refuses malformed strings with a clear error', () => {
    const table: [string, ImagePolicyErrorKind][] = [
      ['root', 'syntax'],
      ['root=signed:', 'syntax'],
      [':root=signed', 'syntax'],
      ['root=signed::usr=signed', 'syntax'],
      ['**', 'syntax'],
      ['root=bogus', 'unknown-flag'],
      ['root=signed+', 'unknown-flag'],
      ['root=+signed', 'unknown-flag'],
      ['root=signed,absent', 'unknown-flag'],
      ['root=Signed', 'unknown-flag'],
      ['root=verity=signed', 'unknown-flag'],
      ['root=*', 'unknown-flag'],
      ['rootfs=signed', 'unknown-designator'],
      ['ROOT=signed', 'unknown-designator'],
      ['root-x86-64=signed', 'unknown-designator'],
      ['root=signed:root=absent', 'duplicate'],
      ['=open:=ignore', 'duplicate'],
      ['root=signed:' + 'x'.repeat(5000), 'too-long'],
    ];
    for (const [input, kind] of table) throwsKind(() => parseImagePolicy(input), kind);
    const err = (() => {
      try {
        parseImagePolicy('root=bogus');
      } catch (e) {
        return e;
      }
    })();
    assert.ok(err instanceof ImagePolicyError);
    assert.equal(err.error, 'org.varlink.service.InvalidParameter');
    assert.deepEqual(err.parameters, { parameter: 'imagePolicy' });
  });

  it('intersects', () => {
    const untrusted = 'root=signed+absent:usr=signed+absent';
    const table: [string, string, string][] = [
      ['*', '*', '*'],
      ['*', untrusted, untrusted],
      [untrusted, '*', untrusted],
      ['-', '*', '-'],
      ['~', '*', '~'],
      // usr must be absent, so must its verity partitions (the derived rules are kept explicit)
      [untrusted, 'root=verity+signed', 'root=signed:usr=absent:usr-verity=absent:usr-verity-sig=absent'],
      [untrusted, 'root=signed+unprotected+absent:usr=open:=open', untrusted],
      [untrusted, 'root=verity', 'IMPOSSIBLE'],
      [untrusted, 'root=unprotected+absent', 'root=absent:usr=absent:root-verity=absent:usr-verity=absent:root-verity-sig=absent:usr-verity-sig=absent'],
      [untrusted, '=open', untrusted],
      ['root=open+read-only-on', 'root=open+read-only-off', '-'],
      ['root=open+read-only-on:=open', 'root=open+read-only-off:=open', 'root=ignore:root-verity=ignore:root-verity-sig=ignore:=open'],
      ['root=signed', 'root-verity=absent', 'IMPOSSIBLE'],
      ['-', 'root=absent+signed', 'root=absent:root-verity=absent:root-verity-sig=absent'],
      ['root=verity+read-only-on', 'root=verity+read-only-off', 'IMPOSSIBLE'],
      ['root=ext4+erofs', 'root=erofs+xfs', 'root=erofs'],
      ['root=ext4', 'root=xfs+absent', 'root=absent'],
      ['home=unprotected', 'home=encrypted', 'IMPOSSIBLE'],
      ['home=unprotected+absent:=open', '=unprotected', '=unprotected'],
      ['home=unprotected+absent:=open', '=unprotected+encrypted', 'home=unprotected:=encrypted+unprotected'],
      ['=open', '=signed', '=signed'],
      ['=verity', '=encrypted', 'IMPOSSIBLE'],
    ];
    for (const [a, b, want] of table) {
      if (want === 'IMPOSSIBLE') {
        throwsKind(() => meet(a, b), 'impossible');
        continue;
      }
      assert.equal(meet(a, b), want, `${a} ∩ ${b}`);
    }
    try {
      meet(untrusted, 'root=verity');
    } catch (err) {
      assert.ok(err instanceof ImagePolicyError);
      assert.equal(err.error, 'io.systemd.MountFileSystem.DeniedByImagePolicy');
    }
  });

  it('evaluates partitions like mountfsd does for untrusted images', () => {
    const u = UNTRUSTED_DEFAULT_POLICY;
    assert.equal(formatImagePolicy(u), 'root=signed+absent:usr=signed+absent');
    assert.deepEqual(evaluatePartition(u, 'root', 'signed'), { verdict: 'use', as: 'signed' });
    assert.equal(evaluatePartition(u, 'root', 'verity').verdict, 'deny');
    assert.equal(evaluatePartition(u, 'root', 'unprotected').verdict, 'deny');
    assert.equal(evaluatePartition(u, 'root', 'encrypted').verdict, 'deny');
    assert.deepEqual(evaluatePartition(u, 'root', 'absent'), { verdict: 'skip' });
    assert.deepEqual(evaluatePartition(u, 'usr', 'signed'), { verdict: 'use', as: 'signed' });
    // everything else is ignored: may exist, never mounted
    for (const d of ['home', 'srv', 'esp', 'xbootldr', 'swap', 'tmp', 'var'] as const) {
      assert.deepEqual(evaluatePartition(u, d, 'unprotected'), { verdict: 'skip' }, d);
      assert.deepEqual(evaluatePartition(u, d, 'absent'), { verdict: 'skip' }, d);
    }
    // the verity partitions of a signed root come along
    assert.deepEqual(evaluatePartition(u, 'root-verity', 'unprotected'), { verdict: 'use', as: 'unprotected' });
    assert.deepEqual(evaluatePartition(u, 'root-verity-sig', 'unprotected'), { verdict: 'use', as: 'unprotected' });
  });

  it('downgrades signed → verity → unprotected, never upgrades', () => {
    const p = (s: string): ImagePolicy => parseImagePolicy(s);
    assert.deepEqual(evaluatePartition(p('root=verity'), 'root', 'signed'), { verdict: 'use', as: 'verity' });
    assert.deepEqual(evaluatePartition(p('root=unprotected'), 'root', 'signed'), { verdict: 'use', as: 'unprotected' });
    assert.deepEqual(evaluatePartition(p('root=unprotected'), 'root', 'verity'), { verdict: 'use', as: 'unprotected' });
    assert.equal(evaluatePartition(p('root=signed'), 'root', 'verity').verdict, 'deny');
    assert.equal(evaluatePartition(p('root=unprotected'), 'root', 'encrypted').verdict, 'deny');
    assert.equal(evaluatePartition(p('root=signed'), 'root', 'absent').verdict, 'deny');
    assert.deepEqual(evaluatePartition(p('root=signed+unused'), 'root', 'verity'), { verdict: 'skip' });
    // verity makes no sense for home: only unprotected/encrypted count there
    assert.equal(evaluatePartition(p('home=verity'), 'home', 'verity').verdict, 'deny');
  });

  it('checks GPT flags and file systems', () => {
    const p = parseImagePolicy('root=signed+read-only-on+erofs+squashfs:home=unprotected+growfs-off+unused');
    assert.equal(evaluatePartition(p, 'root', 'signed', { readOnly: true, fileSystem: 'erofs' }).verdict, 'use');
    assert.equal(evaluatePartition(p, 'root', 'signed', { readOnly: false, fileSystem: 'erofs' }).verdict, 'deny');
    assert.equal(evaluatePartition(p, 'root', 'signed', { readOnly: true, fileSystem: 'ext4' }).verdict, 'deny');
    assert.equal(evaluatePartition(p, 'home', 'unprotected', { growFileSystem: false }).verdict, 'use');
    assert.equal(evaluatePartition(p, 'home', 'unprotected', { growFileSystem: true }).verdict, 'skip');
    assert.equal(evaluatePartition(ALLOW_POLICY, 'root', 'unprotected', { readOnly: false, growFileSystem: true, fileSystem: 'btrfs' }).verdict, 'use');
  });

  // Strings built from the policy vocabulary, so that many of them parse.
  const token = fc.oneof(
    fc.constantFrom(...DESIGNATORS, 'open', 'ignore', 'signed', 'verity', 'encrypted', 'unprotected', 'unused', 'absent',
      'read-only-on', 'read-only-off', 'growfs-on', 'growfs-off', 'ext4', 'erofs', 'squashfs', 'xfs', '-', '*', '~', ''),
    fc.string({ maxLength: 4 }),
  );
  const sep = fc.constantFrom(':', '=', '+', ' ', '');
  const policyish = fc.oneof(
    fc.array(fc.tuple(token, sep), { maxLength: 12 }).map((parts) => parts.map(([t, s]) => t + s).join('')),
    fc.array(
      fc.tuple(fc.constantFrom(...DESIGNATORS, ''), fc.array(fc.constantFrom('open', 'ignore', 'signed', 'verity', 'encrypted', 'unprotected', 'unused', 'absent', 'read-only-on', 'growfs-off', 'ext4', 'erofs'), { maxLength: 4 })),
      { maxLength: 6 },
    ).map((rules) => rules.map(([d, f]) => `${d}=${f.join('+')}`).join(':')),
    fc.string({ maxLength: 40 }),
  );

  function tryParse(s: string): ImagePolicy | undefined {
    try {
      return parseImagePolicy(s);
    } catch (err) {
      assert.ok(err instanceof ImagePolicyError, `parse(${JSON.stringify(s)}) threw ${String(err)}`);
      return undefined;
    }
  }

  it('property: parse throws only ImagePolicyError, format is a stable, equivalent canonical form', () => {
    let parsed = 0;
    fc.assert(
      fc.property(policyish, (s) => {
        const p = tryParse(s);
        if (!p) return;
        parsed++;
        const once = formatImagePolicy(p);
        const again = parseImagePolicy(once);
        assert.equal(formatImagePolicy(again), once, `unstable for ${JSON.stringify(s)}`);
        assert.ok(equivalentPolicies(p, again), `format changed the meaning of ${JSON.stringify(s)}: ${once}`);
      }),
      { numRuns: 1000, seed: 20260801 },
    );
    assert.ok(parsed > 200, `only ${parsed} of 1000 strings parsed; the generator is too weak`);
  });

  const states: PartitionState[] = ['signed', 'verity', 'encrypted', 'unprotected', 'absent'];
  const uses = (v: Verdict): boolean => v.verdict === 'use';

  it('property: the intersection allows nothing that either side forbids', () => {
    fc.assert(
      fc.property(policyish, policyish, (sa, sb) => {
        const a = tryParse(sa);
        const b = tryParse(sb);
        if (!a || !b) return;
        let r: ImagePolicy;
        try {
          r = intersectImagePolicies(a, b);
        } catch (err) {
          assert.ok(err instanceof ImagePolicyError && err.kind === 'impossible', String(err));
          return;
        }
        for (const d of DESIGNATORS) {
          for (const st of states) {
            for (const attrs of [{}, { readOnly: true, fileSystem: 'ext4' }, { readOnly: false, growFileSystem: true, fileSystem: 'erofs' }]) {
              const vr = evaluatePartition(r, d, st, attrs);
              const va = evaluatePartition(a, d, st, attrs);
              const vb = evaluatePartition(b, d, st, attrs);
              if (uses(vr)) assert.ok(uses(va) && uses(vb), `${sa} ∩ ${sb} uses ${st} ${d}`);
              if (vr.verdict !== 'deny') assert.ok(va.verdict !== 'deny' && vb.verdict !== 'deny', `${sa} ∩ ${sb} allows ${st} ${d}`);
            }
          }
        }
      }),
      { numRuns: 300, seed: 7 },
    );
  });
});
