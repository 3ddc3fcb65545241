// The BPF object as the loader reads it (no kernel load needed, so this runs on the host): the
// programs and maps it derives from the object, that this kernel has their hooks, the id windows
// it hands the object before load, and the record layouts policy.ts shares with
// src/bpf/userns-restrict.h (compiled here, since TypeScript cannot include it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as bpf from '../../src/bpf/libbpf.js';
import { DEATH_RECORD, ID_WINDOWS, ID_WINDOWS_SECTION, MAP_ENTRIES, OBJECT_PATH, idWindowsImage, readObject } from '../../src/bpf/policy.js';
import { CONTAINER_WINDOW, DYNAMIC_WINDOW, FOREIGN_RANGE } from '../../src/id-ranges.js';
import { projectRoot } from '../../src/native/index.js';

const BPF_DIR = path.join(projectRoot, 'src/bpf');

test('the loader takes its program list from the object: every LSM hook, death probes by preference', () => {
  const { lsm, probes } = readObject();
  assert.deepEqual(lsm, [
    'path_mkdir', 'path_mknod', 'path_symlink', 'path_link', 'path_rename',
    'inode_mkdir', 'inode_create', 'inode_mknod', 'inode_symlink', 'inode_link',
    'path_chown', 'inode_set_acl', 'inode_setxattr', 'sb_kern_mount', 'task_fix_setgroups',
  ]);
  assert.deepEqual(probes, ['retire_userns_sysctls', 'free_user_ns']);
});

test('the loader takes its pinned maps from the object: all but the per-task scratch, namespace hashes resizable', () => {
  assert.deepEqual(readObject().maps, [
    { pin: 'managed', name: 'userns_managed', resizable: true },
    { pin: 'setgroups_deny', name: 'userns_setgroups_deny', resizable: true },
    { pin: 'ringbuf', name: 'userns_ringbuf', resizable: false },
    { pin: 'meta', name: 'userns_meta', resizable: false },
  ]);
});

test('the maps policy.ts reads and writes have the key and value sizes it uses', () => {
  const obj = bpf.openObject(OBJECT_PATH);
  try {
    const sizes = Object.fromEntries(
      Object.keys(MAP_ENTRIES).map((pin) => {
        const map = bpf.findMap(obj, `userns_${pin}`);
        return [pin, { key: bpf.keySize(map), value: bpf.valueSize(map) }];
      }),
    );
    assert.deepEqual(sizes, MAP_ENTRIES);
  } finally {
    bpf.closeObject(obj);
  }
});

test('every hook the object uses exists in this kernel as a BPF LSM attachment point', () => {
  const { lsm } = readObject();
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
  for (const file of ['userns-restrict.bpf.c', 'userns-restrict.h']) {
    const source = fs.readFileSync(path.join(BPF_DIR, file), 'utf8');
    for (const n of words.slice(1)) {
      for (const literal of [String(n), `0x${n.toString(16)}`]) {
        assert.equal(new RegExp(`\\b${literal}\\b`, 'i').test(source), false, `${file} writes ${literal}`);
      }
    }
  }
});

test('policy.ts reads death records and writes id windows with the layouts of userns-restrict.h', () => {
  // The program includes the header; the loader's side is checked against the same header here.
  const source = fs.readFileSync(path.join(BPF_DIR, 'userns-restrict.bpf.c'), 'utf8');
  assert.match(source, /#include "userns-restrict.h"/);
  assert.doesNotMatch(source, /struct (userns_death|id_windows?) \{/, 'the shared structs are declared in the header only');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mg-bpf-layout-'));
  try {
    const probe = path.join(dir, 'layout.c');
    fs.writeFileSync(probe, `#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>
#include "userns-restrict.h"
#define F(t, m) offsetof(struct t, m)
int main(void) {
  printf("{\\"death\\":{\\"size\\":%zu,\\"inode\\":%zu},", sizeof(struct userns_death), F(userns_death, inode));
  printf("\\"idWindows\\":{\\"size\\":%zu,\\"configured\\":%zu,\\"transient\\":%zu,\\"foreign\\":%zu,",
         sizeof(struct id_windows), F(id_windows, configured), F(id_windows, transient), F(id_windows, foreign));
  printf("\\"windowSize\\":%zu,\\"last\\":%zu,\\"windows\\":%d,\\"first\\":%zu}}\\n",
         sizeof(struct id_window), F(id_window, last), TRANSIENT_WINDOWS, F(id_window, first));
  return 0;
}
`);
    execFileSync('cc', ['-Wall', '-Werror', '-I', BPF_DIR, '-o', path.join(dir, 'layout'), probe]);
    const c = JSON.parse(execFileSync(path.join(dir, 'layout'), { encoding: 'utf8' })) as {
      death: Record<string, number>;
      idWindows: Record<string, number>;
    };
    assert.deepEqual(c.death, { ...DEATH_RECORD });
    assert.deepEqual(c.idWindows, { ...ID_WINDOWS, first: 0 });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
