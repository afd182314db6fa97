// native-stubs/power9/guest-checks.mjs — checks of xive-remap on a POWER9 host with upstream KVM XIVE,
// through the library's public API and CLI.
//
// Runs inside the emulated POWER9 guest that run.sh boots (Node 18; the package at /opt/xive-remap,
// importable by name), and unchanged on a real POWER9/10 host from a checkout (after `npm run build`):
//   node native-stubs/power9/guest-checks.mjs        (root, or access to /dev/kvm; kvm-hv loaded)
// XIVE_POWER9_NODE_MAJOR relaxes the Node version check. Prints one `ok - …` / `not ok - …` line per
// check, `# …` lines of detail, and a closing `N passed, N failed` line; exit status 1 if any failed.
//
// ESB loads have side effects, and a load from a source the kernel does not know SIGBUSes the process:
// every load here goes to a source configured first (KVM_DEV_XIVE_GRP_SOURCE), and goes through
// XiveKvmDevice.esbGet/esbSetPq, which refuse anything else. The contract probe loads nothing.

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, need, detail, hex, finish } from './check-harness.mjs';


// Which kernel run.sh booted (XIVE_POWER9_KERNEL, set by /init): 'patched' is kvm.ko with kernel/'s
// patch, whose XIVE device maps each interrupt at its own offset; anything else is upstream's.
const patched = process.env.XIVE_POWER9_KERNEL === 'patched';
const contract = patched ? 'per-irq-offsets' : 'fixed-offset';
const autoMode = patched ? 'overlay' : 'kernel-managed';
// Checks of how upstream's fixed-offset device behaves; on the patched kernel they are listed as skipped.
const stockOnly = (name, fn) => (patched ? detail(`skipped on the patched kernel: ${name}`) : check(name, fn));

// --- the package, by name (self-reference in a checkout; /opt/node_modules/xive-remap in the guest)
const require = createRequire(import.meta.url);
const entry = require.resolve('xive-remap'); // …/dist/src/index.js
const dist = dirname(dirname(entry));
const cli = join(dist, 'src', 'cli', 'main.js');
const example = join(dist, 'examples', 'power-hotplug.js');
const st = {}; // state shared between checks

await check(`node major version is ${process.env.XIVE_POWER9_NODE_MAJOR || 18}`, () => {
  assert.equal(process.versions.node.split('.')[0], String(process.env.XIVE_POWER9_NODE_MAJOR || 18));
  return `v${process.versions.node}`;
});

await check("process.arch is 'ppc64', little-endian", () => {
  assert.equal(process.arch, 'ppc64');
  assert.equal(endianness(), 'LE');
});

await check("import('xive-remap') loads the library (koffi 3, ppc64le build)", async () => {
  st.lib = await import('xive-remap');
  // The native layer is not public API; the checks need it for the raw demonstration mapping.
  st.internal = await import(pathToFileURL(join(dirname(entry), 'internal.js')).href);
  assert.equal(typeof st.lib.XiveKvmDevice?.open, 'function');
  return `from ${dist}`;
});

// --- the CLI ------------------------------------------------------------------------------------
await check(`xive-remap probe --json: ppc64, 64 KiB pages, /dev/kvm API 12, KVM_CAP_PPC_IRQ_XIVE, ${contract} contract`, () => {
  const r = JSON.parse(execFileSync(process.execPath, [cli, 'probe', '--json'], { encoding: 'utf8' }));
  st.probe = r;
  assert.equal(r.arch, 'ppc64');
  assert.equal(r.endianness, 'LE');
  assert.equal(r.pageSize, 65536);
  assert.equal(r.kvm.usable, true, r.kvm.error);
  assert.equal(r.kvm.apiVersion, 12);
  assert.ok(r.caps.ppcIrqXive > 0, `KVM_CAP_PPC_IRQ_XIVE = ${r.caps.ppcIrqXive}`);
  assert.ok(r.caps.nrMemslots > 0);
  assert.equal(r.xive.probed, true, r.xive.note);
  assert.equal(r.xive.contract, contract);
  assert.equal(r.xive.esbShift, 17);
  assert.equal(r.xive.autoMode, autoMode);
  return `memslots ${r.caps.nrMemslots}, vm.max_map_count ${r.maxMapCount}`;
});

await check('xive-remap probe (text) says the same', () => {
  const text = execFileSync(process.execPath, [cli, 'probe'], { encoding: 'utf8' });
  detail(text);
  assert.match(text, new RegExp(`^ {2}XIVE device contract +${contract} \\(esbShift 17; mode 'auto' picks ${autoMode}\\)$`, 'm'));
  assert.match(text, /^ {2}page size +65536 bytes$/m);
});

// --- the device, through a recording native layer ------------------------------------------------
const ENC = { CREATE_VM: 0x2000ae01, CHECK_EXTENSION: 0x2000ae03, CREATE_DEVICE: 0xc00caee0, SET_DEVICE_ATTR: 0x8018aee1 };

await check('XiveKvmDevice.open creates the XIVE device with the powerpc ioctl encodings', () => {
  const { realNative } = need(st.internal, 'the library');
  const rec = { ioctls: [], mmaps: [], loads: 0 };
  st.rec = rec;
  st.native = {
    ...realNative,
    ioctl(fd, request, arg) { rec.ioctls.push(request); return realNative.ioctl(fd, request, arg); },
    mmap(addr, length, prot, flags, fd, offset) {
      const m = { addr, length, flags, fd, offset, result: 'ok' };
      rec.mmaps.push(m);
      try { return realNative.mmap(addr, length, prot, flags, fd, offset); } catch (e) { m.result = e.code; throw e; }
    },
    loadBe64(addr) { rec.loads++; return realNative.loadBe64(addr); },
  };
  st.dev = st.lib.XiveKvmDevice.open({ nrIrqs: 16, nrServers: 1, native: st.native });
  for (const [name, n] of Object.entries(ENC)) assert.ok(rec.ioctls.includes(n), `no ${name} (${hex(n)}) issued`);
  return `KVM_CREATE_DEVICE=${hex(ENC.CREATE_DEVICE)}, KVM_SET_DEVICE_ATTR=${hex(ENC.SET_DEVICE_ATTR)}; device fd ${st.dev.fd}`;
});

await check(`device geometry: two 64 KiB pages per interrupt (esbShift 17), not mergeable, contract ${contract}`, () => {
  const dev = need(st.dev, 'the device');
  assert.deepEqual({ ...dev.geometry }, { esbShift: 17, pagesPerIrq: 2, esbPageSize: 0x10000n, bytesPerIrq: 0x20000n, hostPageSize: 0x10000n });
  assert.equal(dev.mergeable, false);
  assert.equal(dev.contract, contract);
  assert.equal(dev.esbFileOffset(1), 6n * 0x10000n);
});

await check(`the contract probe touched no ESB page: one trial mmap at page offset 6 (${patched ? 'ok' : 'EINVAL'}), no load`, () => {
  const rec = need(st.rec, 'the recording');
  const onDev = rec.mmaps.filter((m) => m.fd === st.dev.fd);
  assert.deepEqual(onDev.map((m) => [m.addr, m.offset, m.length, m.result]), [[0n, 6n * 0x10000n, 0x20000n, patched ? 'ok' : 'EINVAL']]);
  assert.equal(rec.loads, 0);
});

await stockOnly("EsbController.open(dev, { mode: 'overlay' }) is refused with E_DEVICE_CONTRACT before anything is mapped", () => {
  const { realNative } = st.internal;
  // Only the device's own mappings are compared: V8 maps and unmaps heap pages of its own at any time.
  const deviceMaps = () => realNative.readMaps().filter((m) => /kvm-xive/.test(m.path)).map((m) => `${m.start}-${m.end}`);
  const maps = deviceMaps();
  const mmaps = need(st.rec, 'the recording').mmaps.length;
  assert.throws(() => st.lib.EsbController.open(need(st.dev, 'the device'), { mode: 'overlay', native: st.native }),
    (e) => e instanceof st.lib.RemapError && e.code === 'E_DEVICE_CONTRACT' && /fixed-offset/.test(e.message));
  assert.equal(st.rec.mmaps.length, mmaps, 'mmaps issued by the refused open');
  assert.deepEqual(deviceMaps(), maps, 'mappings of the XIVE device in this process');
});

await check(`EsbController.open(dev, { mode: 'auto' }) picks ${autoMode} over one mapping of the ESB range`, () => {
  const esb = st.lib.EsbController.open(need(st.dev, 'the device'), { mode: 'auto', native: st.native });
  st.esb = esb;
  assert.equal(esb.mode, autoMode);
  assert.equal(esb.memslot.size, 16n * 0x20000n);
  const m = st.rec.mmaps.at(-1);
  assert.deepEqual([m.offset, m.length, m.result], [4n * 0x10000n, 16n * 0x20000n, 'ok']);
  const vma = st.internal.realNative.readMaps().find((v) => v.start === esb.memslot.userspaceAddr);
  assert.deepEqual(esb.audit(), []);
  return `${hex(esb.memslot.userspaceAddr)}+${hex(esb.memslot.size)}, ${vma?.path}`;
});

// --- the region holds the ESB pages ---------------------------------------------------------------
await check('sources 0-3 configured through KVM_SET_DEVICE_ATTR (KVM_DEV_XIVE_GRP_SOURCE) read PQ=01 through the region', () => {
  const dev = need(st.dev, 'the device');
  const base = need(st.esb, 'the region').memslot.userspaceAddr;
  for (let irq = 0; irq < 4; irq++) dev.setSourceState(irq);
  const pq = [0, 1, 2, 3].map((irq) => dev.esbGet(base, irq));
  assert.deepEqual(pq, [1, 1, 1, 1], 'the kernel masks a new source with an ESB SET_PQ_01 load');
  return 'ESB_GET at management page + 0x800';
});

await check('SET_PQ loads (0xc00/0xd00/0xe00/0xf00) give sources 0-3 four PQ states; ESB_GET reads each back', () => {
  const dev = need(st.dev, 'the device');
  const base = st.esb.memslot.userspaceAddr;
  const old = [0, 1, 2, 3].map((irq) => dev.esbSetPq(base, irq, irq));
  assert.deepEqual(old, [1, 1, 1, 1], 'SET_PQ returns the old bits');
  const pq = [0, 1, 2, 3].map((irq) => dev.esbGet(base, irq));
  assert.deepEqual(pq, [0, 1, 2, 3]);
  st.states = true;
  return pq.map((p, irq) => `${irq}:${st.lib.formatPq(p)}`).join(' ');
});

await check('an ESB load from an unconfigured source is refused, not made (it would SIGBUS)', () => {
  const dev = need(st.dev, 'the device');
  const loads = st.rec.loads;
  assert.throws(() => dev.esbGet(st.esb.memslot.userspaceAddr, 5), (e) => e.code === 'E_IRQ_RANGE' && /SIGBUS/.test(e.message));
  assert.equal(st.rec.loads, loads);
});

// --- why overlay is refused, on this kernel (a raw mapping made for it, NOT the controller's) -----
await stockOnly('a memfd MAP_FIXED over interrupt 0 of a raw ESB mapping makes loads from interrupts 1,2,3 reach sources 0,1,2', () => {
  need(st.states, 'the four PQ states');
  const { realNative, MAP_SHARED, MAP_FIXED, PROT_READ, PROT_WRITE, MFD_CLOEXEC } = st.internal;
  const dev = st.dev;
  const bpi = dev.geometry.bytesPerIrq;
  const len = 4n * bpi;
  const raw = realNative.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_SHARED, dev.fd, dev.esbFileOffset(0));
  realNative.claim(raw, len);
  const memfd = realNative.memfdCreate('overlay-demo', MFD_CLOEXEC);
  st.raw = { raw, len, memfd };
  realNative.ftruncate(memfd, bpi);
  // The overlay splits the VMA: the rest starts at vm_pgoff 6, and xive_native_esb_fault computes the
  // interrupt as (vmf->pgoff - vma->vm_pgoff) / 2, so interrupt n+1's pages now fault in source n's.
  realNative.mmap(raw, bpi, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, memfd, 0n);
  const vmas = realNative.readMaps().filter((v) => v.start >= raw && v.end <= raw + len);
  detail(`raw mapping after the overlay: ${vmas.map((v) => `${hex(v.start)}-${hex(v.end)} pgoff ${hex(v.offset)} ${v.path}`).join(' | ')}`);
  const got = [1, 2, 3].map((irq) => dev.esbGet(raw, irq));
  assert.deepEqual(got, [0, 1, 2], `loads from interrupts 1,2,3 returned ${got}`);
  return `interrupts 1,2,3 read PQ ${got.map(st.lib.formatPq).join(',')}: the states of sources 0,1,2 (theirs: 01,10,11)`;
});

await stockOnly('a SET_PQ_00 load aimed at interrupt 3 through the split mapping changes interrupt 2, as the region shows', () => {
  const { raw } = need(st.raw, 'the split mapping');
  const dev = st.dev;
  const base = st.esb.memslot.userspaceAddr;
  const old = dev.esbSetPq(raw, 3, 0);
  assert.equal(old, 2, 'the old PQ returned is source 2\'s (10), not source 3\'s (11)');
  const pq = [0, 1, 2, 3].map((irq) => dev.esbGet(base, irq));
  assert.deepEqual(pq, [0, 1, 0, 3], `through the region: ${pq}`);
  return `through the region: ${pq.map((p, irq) => `${irq}:${st.lib.formatPq(p)}`).join(' ')}`;
});

await stockOnly('mapping the device back over interrupt 0 leaves the wrong translations in place', () => {
  const { raw } = need(st.raw, 'the split mapping');
  const { realNative, MAP_SHARED, MAP_FIXED, PROT_READ, PROT_WRITE } = st.internal;
  const dev = st.dev;
  realNative.mmap(raw, dev.geometry.bytesPerIrq, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, dev.fd, dev.esbFileOffset(0));
  const got = [1, 2, 3].map((irq) => dev.esbGet(raw, irq));
  assert.deepEqual(got, [0, 1, 0], `loads from interrupts 1,2,3 returned ${got}; sources 1,2,3 hold 01,00,11`);
  return `interrupts 1,2,3 still read ${got.map(st.lib.formatPq).join(',')} (sources 0,1,2)`;
});

if (st.raw) {
  const { realNative } = st.internal;
  try { realNative.munmap(st.raw.raw, st.raw.len); } catch { /* reported by the checks above */ }
  realNative.release(st.raw.raw, st.raw.len);
  realNative.close(st.raw.memfd);
}

// --- the example ----------------------------------------------------------------------------------
await check(`examples/power-hotplug.js: VM + XIVE device, ${autoMode} region, one memslot, attach/detach of a memfd passed as fd 3`, () => {
  const { realNative, MFD_CLOEXEC, MFD_ALLOW_SEALING, F_SEAL_SHRINK } = need(st.internal, 'the library');
  const memfd = realNative.memfdCreate('passthrough-stand-in', MFD_CLOEXEC | MFD_ALLOW_SEALING);
  try {
    realNative.ftruncate(memfd, 1n << 20n);
    realNative.addSeals(memfd, F_SEAL_SHRINK); // PageSource.fromFd takes a memfd only if it cannot shrink
    const r = spawnSync(process.execPath, [example, '--source-fd', '3', '--source-offset', '0x20000', '--guest-irq', '5'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe', memfd] });
    detail(r.stdout + (r.stderr ? `stderr: ${r.stderr}` : ''));
    assert.equal(r.status, 0, `exit status ${r.status}`);
    assert.match(r.stdout, new RegExp(`mode 'auto' picked ${autoMode}`));
    assert.match(r.stdout, /attach\(5\): backingOf -> passthrough fd3\+0 @ 0x20000/);
    if (patched) assert.match(r.stdout, /overlay: 1 mmap\(MAP_FIXED\) put the source's pages over interrupt 5's IPI pages \(audit: \[\]\)/);
    else assert.match(r.stdout, /kernel-managed: 0 system calls on the region; nothing was mapped over it \(audit: \[\]\)/);
    assert.match(r.stdout, /KVM_SET_USER_MEMORY_REGION calls for slot \d+: 1 /);
    assert.match(r.stdout, /ESB_GET through the region reads PQ=01/);
    assert.match(r.stdout, /^teardown: /m);
  } finally {
    realNative.close(memfd);
  }
});

await check('closing the region and the device', () => {
  need(st.esb, 'the region').close();
  need(st.dev, 'the device').close();
  assert.equal(st.esb.closed, true);
  assert.equal(st.dev.closed, true);
});

finish('guest-checks');
