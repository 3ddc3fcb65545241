// The BPF object as the loader reads it (no kernel load needed, so this runs on the host): the
// programs it derives from the object's SEC() names, and that this kernel has their hooks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as bpf from '../../src/bpf/libbpf.js';
import { objectPrograms } from '../../src/bpf/policy.js';

test('the loader takes its program list from the object: every LSM hook, death probes by preference', () => {
  const { lsm, probes } = objectPrograms();
  assert.deepEqual(lsm, [
    'path_mkdir', 'path_mknod', 'path_symlink', 'path_link',
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
