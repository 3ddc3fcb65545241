// The BPF object as the loader reads it (no kernel load needed, so this runs on the host): the
// programs it derives from the object's SEC() names, that this kernel has their hooks, and the
// id windows it hands the object before load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as bpf from '../../src/bpf/libbpf.js';
import { ID_WINDOWS_SECTION, OBJECT_PATH, idWindowsImage, objectPrograms } from '../../src/bpf/policy.js';
import { CONTAINER_WINDOW, DYNAMIC_WINDOW, FOREIGN_RANGE } from '../../src/id-ranges.js';
import { projectRoot } from '../../src/native/index.js';

test('the loader takes its program list from the object: every LSM hook, death probes by preference', () => {
  const { lsm, probes } = objectPrograms();
  assert.deepEqual(lsm, [
    'path_mkdir', 'path_mknod', 'path_symlink', 'path_link', 'path_rename',
    'inode_mkdir', 'inode_create', 'inode_mknod', 'inode_symlink', 'inode_link',
    'path_chown', 'inode_set_acl', 'inode_setxattr', 'sb_kern_mount', 'task_fix_setgroups',
  ]);
  assert.deepEqual(probes, ['retire_userns_sysctls', 'free_user_ns']);
});

test('every hook the object uses exists in this kernel as a BPF LSM attachment point', () => {
  const { lsm } = objectPrograms();
  const present = bpf.kernelBtfFunctions(lsm.map((h) => `bpf_lsm_${h}`));
  assert.deepEqual(lsm.filter((h) => !present.has(`bpf_lsm_${h}`)), []);
});

test('the id windows reach the object from src/id-ranges.ts, and the C names none itself', () => {
  const obj = bpf.openObject(OBJECT_PATH);
  try {
    const image = idWindowsImage();
    assert.equal(bpf.valueSize(bpf.findMap(obj, ID_WINDOWS_SECTION)), image.length);
    // Accepted before load: the same call the loader makes.
    bpf.setInitialValue(bpf.findMap(obj, ID_WINDOWS_SECTION), image);
  } finally {
    bpf.closeObject(obj);
  }
  const words = Array.from({ length: idWindowsImage().length / 4 }, (_, i) => idWindowsImage().readUInt32LE(i * 4));
  assert.deepEqual(words, [
    1,
    DYNAMIC_WINDOW.min, DYNAMIC_WINDOW.max, CONTAINER_WINDOW.min, CONTAINER_WINDOW.max,
    FOREIGN_RANGE.start, FOREIGN_RANGE.start + FOREIGN_RANGE.size - 1,
  ]);
  const source = fs.readFileSync(path.join(projectRoot, 'src/bpf/userns-restrict.bpf.c'), 'utf8');
  for (const n of words.slice(1)) {
    for (const literal of [String(n), `0x${n.toString(16)}`]) {
      assert.equal(new RegExp(`\\b${literal}\\b`, 'i').test(source), false, `userns-restrict.bpf.c writes ${literal}`);
    }
  }
});
