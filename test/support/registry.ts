// userdbd's registry as the files on disk show it (to prove no record is half-written or left).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

export interface RegistryFileRecord {
  userns: number;
  nsId: string;
  owner: number;
  name: string;
  size: number;
  start?: number;
  delegates: Array<{ start: number; size: number }>;
}

/** Reads <stateDir>/registry, failing on anything but complete records and the lock file
 * (and, when `busy`, the tmp file of a write under way). */
export function registryFiles(stateDir: string, busy = false): RegistryFileRecord[] {
  const dir = path.join(stateDir, 'registry');
  const out: RegistryFileRecord[] = [];
  for (const entry of fs.readdirSync(dir)) {
    if (entry === 'lock' || (busy && /^i[0-9]+\.userns\.tmp$/.test(entry))) continue;
    assert.match(entry, /^i[0-9]+\.userns$/, `unexpected file in the registry: ${entry}`);
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, entry), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed since readdir
      throw e;
    }
    assert.ok(text.endsWith('}\n'), `half-written record ${entry}: ${JSON.stringify(text.slice(-80))}`);
    const rec = JSON.parse(text) as RegistryFileRecord;
    assert.equal(`i${rec.userns}.userns`, entry);
    out.push(rec);
  }
  return out;
}
