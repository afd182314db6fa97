// native-stubs/power9/qemu-checks.mjs — the real VMM in the loop: Debian's qemu-system-ppc64 runs a
// pseries KVM-HV guest with in-kernel XIVE inside the emulated POWER9, and the project's CLI reads it
// live while the guest boots, takes a hot-plugged PCI device and gives it back.
//
// Runs first in both boots of run.sh (stock and patched kvm.ko); build-qemu-layer.sh puts QEMU, its
// libraries, SLOF, the L2 kernel and the L2 initramfs (qemu-l2/init) into the boot's initramfs.
// A guest that gets stuck in the hot-plug gets up to two more tries on a new QEMU, said in the ok line (see
// the comment there).
// The flow, one check per step:
//   start QEMU (QMP and the guest's command channel on sockets, the guest's console in a file)
//   → wait until the guest prints and reaches userspace: QEMU creates and maps the XIVE device
//     before KVM can refuse a machine option (it then exits about a second later), so its maps are
//     trusted only once the guest runs
//   → `xive-remap inspect --pid <qemu> --json`, `xive-remap probe --json`, KVM's debugfs
//   → QMP device_add of an e1000e on a PCI host bridge of its own, drmgr in the guest → debugfs and
//     the guest's interrupt counts → inspect
//   → QMP device_del, drmgr -r in the guest → debugfs and QMP → inspect → the guest powers off.
// Elsewhere (a real POWER9/10 host with kvm-hv and QEMU): XIVE_QEMU_BIN (default
// /usr/bin/qemu-system-ppc64) and XIVE_QEMU_L2 (a directory with vmlinux and initrd.gz made by
// build-qemu-layer.sh; default /opt/qemu-l2). Root is needed for KVM's debugfs.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { basename, dirname, join } from 'node:path';
import { check, need, detail, hex, finish } from './check-harness.mjs';

const patched = process.env.XIVE_POWER9_KERNEL === 'patched';
const contract = patched ? 'per-irq-offsets' : 'fixed-offset';
const QEMU = process.env.XIVE_QEMU_BIN || '/usr/bin/qemu-system-ppc64';
const L2 = process.env.XIVE_QEMU_L2 || '/opt/qemu-l2';
const cli = join(dirname(dirname(createRequire(import.meta.url).resolve('xive-remap'))), 'src', 'cli', 'main.js');
const WORK = '/tmp/xive-qemu';
const PAGE = 0x10000n; // the emulated POWER9's page size (the probe check below confirms it)
const BYTES_PER_IRQ = 2n * PAGE; // esbShift 17: a trigger and a management page
// QEMU 7.2's pseries XIVE, as seen here: the vCPUs' IPIs below LISN 0x1000, devices' from 0x1000 on.
const QEMU_NR_IRQS = 0x2000;
// The hot-plugged device: an e1000e on PHB 1 (no ROM in the layer: romfile=). A PHB of its own,
// because the guest's rpaphp removes every device on a slot's bus when drmgr -r powers the slot off,
// and all of a QEMU PHB's slots share its root bus. QEMU names PCI DRCs C<(PHB index << 16) | devfn>.
const HOTPLUG = { driver: 'e1000e', id: 'hp0', bus: 'phb1.0', addr: '0x0', romfile: '' };
const DRC = `C${(1 << 16) | 0}`;
const st = {}; // state shared between checks
const t0 = Date.now();
const since = () => ((Date.now() - t0) / 1000).toFixed(1);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- the guest's console and QEMU's state -------------------------------------------------------
const console2 = () => {
  try {
    return fs.readFileSync(`${WORK}/l2.log`, 'latin1').replace(/\r/g, '');
  } catch {
    return '';
  }
};
const l2 = () => console2().split('\n').filter((l) => l.startsWith('l2: ')).map((l) => l.slice(4));
const alive = () => st.qemu && st.qemu.exitCode === null && st.qemu.signalCode === null;
const stderrTail = () => (st.stderr || '').trim().split('\n').slice(-3).join(' | ');

/** Poll until fn() returns a truthy value; fails on timeout or if QEMU is gone. */
async function until(what, fn, seconds) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (!alive()) throw new Error(`QEMU exited (${st.qemu?.exitCode ?? st.qemu?.signalCode}) while waiting for ${what}: ${stderrTail()}`);
    if (Date.now() > end) throw new Error(`no ${what} after ${seconds} s`);
    await sleep(250);
  }
}

/** The guest's reply to a command: its `l2: <cmd> done rc=N` line (and every line before it). */
async function guestCommand(cmd, seconds) {
  const before = l2().length;
  const consoleBefore = console2().length;
  // What the guest's kernel said meanwhile (an oops, a soft lockup) is the only clue when a command fails.
  const showConsole = () => {
    detail(`L2 console since '${cmd}':\n${console2().slice(consoleBefore).split('\n').slice(-80).join('\n')}`);
    detail(`L1 dmesg (last 20 lines), MemAvailable ${Math.round(memAvailable() / 1024)} MiB:\n${execFileSync('dmesg', { encoding: 'utf8' }).trim().split('\n').slice(-20).join('\n')}`);
  };
  st.ctl.write(`${cmd}\n`);
  const name = cmd.split(' ')[0];
  let done;
  try {
    done = await until(`'l2: ${name} done' from the guest`, () => l2().slice(before).find((l) => l.startsWith(`${name} done rc=`)), seconds);
  } catch (e) {
    showConsole();
    throw e;
  }
  const rc = Number(/rc=(\d+)/.exec(done)[1]);
  if (rc !== 0) showConsole();
  return { rc, lines: l2().slice(before) };
}

/** `msi BDF DRIVER IRQ...` and `irq IRQ COUNT NAME` lines of a guest reply. */
function guestDevices(lines) {
  const msi = lines.filter((l) => l.startsWith('msi ')).map((l) => {
    const [, bdf, driver, ...irqs] = l.trim().split(/\s+/);
    return { bdf, driver, irqs: irqs.map(Number) };
  });
  const counts = new Map(lines.filter((l) => l.startsWith('irq ')).map((l) => {
    const [, irq, count, name] = l.trim().split(/\s+/);
    return [Number(irq), { count: Number(count), name }];
  }));
  return { msi, counts };
}

// --- QMP ----------------------------------------------------------------------------------------
/** A QMP connection: commands answered in order, events kept. */
class Qmp {
  #buf = '';
  #waiters = [];
  events = [];
  constructor(sock) {
    this.sock = sock;
    sock.on('error', () => {}); // QEMU going away ends the connection; commands then time out in until()
    sock.setEncoding('utf8');
    sock.on('data', (d) => {
      this.#buf += d;
      for (let i; (i = this.#buf.indexOf('\n')) >= 0; ) {
        const line = this.#buf.slice(0, i).trim();
        this.#buf = this.#buf.slice(i + 1);
        if (!line) continue;
        const msg = JSON.parse(line);
        if (msg.event) this.events.push(msg);
        else this.#waiters.shift()?.(msg);
      }
    });
  }
  static async connect(path) {
    const sock = await until(`QMP socket ${path}`, () => fs.existsSync(path), 30).then(
      () => new Promise((resolve, reject) => {
        const s = net.createConnection(path, () => resolve(s));
        s.once('error', reject);
      }),
    );
    const q = new Qmp(sock);
    q.greeting = (await q.#next()).QMP;
    await q.cmd('qmp_capabilities');
    return q;
  }
  #next() {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  /** One command; its `return`, or an Error naming the command and QEMU's error. */
  async cmd(execute, args) {
    const reply = this.#next();
    this.sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    const r = await reply;
    if (r.error) throw new Error(`QMP ${execute}: ${r.error.class}: ${r.error.desc}`);
    return r.return;
  }
  /** A human monitor command's text. */
  hmp(line) {
    return this.cmd('human-monitor-command', { 'command-line': line });
  }
}

/** The LISNs QEMU's `info pic` lists as claimed. */
const picLisns = (text) => new Set([...text.matchAll(/^\s+([0-9a-f]{8}) (?:MSI|LSI)/gm)].map((m) => parseInt(m[1], 16)));

// --- KVM's debugfs: the VM's XIVE sources -------------------------------------------------------
/** kvm/<qemu pid>-<vm fd>/xive: LISN -> { pq, eisn, server, prio } (pq as printed: '-Q' is masked). */
function kvmSources() {
  const root = '/sys/kernel/debug/kvm';
  const dir = fs.readdirSync(root).find((d) => d.startsWith(`${st.qemu.pid}-`) && fs.existsSync(`${root}/${d}/xive`));
  if (!dir) throw new Error(`no ${root}/${st.qemu.pid}-<fd>/xive (KVM XIVE native device of QEMU's VM)`);
  st.debugfs = `${root}/${dir}/xive`;
  const out = new Map();
  const re = /^([0-9a-f]{8})\s+[0-9a-f]{8}\/[0-9a-f]{2}\s+\^?\s*(MSI|LSI)\s+(\S+)\s+([-P][-Q])\s+([0-9a-f]{8})\s+(\d+)\/(\d+)/;
  for (const line of fs.readFileSync(st.debugfs, 'utf8').split('\n')) {
    const m = re.exec(line.trim());
    if (m) out.set(parseInt(m[1], 16), { type: m[2], pq: m[4], eisn: parseInt(m[5], 16), server: Number(m[6]), prio: Number(m[7]) });
  }
  return out;
}
const showSource = (lisn, s) => `${hex(lisn)} ${s.pq} eisn ${s.eisn} ${s.server}/${s.prio}`;

// --- the project's CLI --------------------------------------------------------------------------
const xiveRemap = (...args) => JSON.parse(execFileSync(process.execPath, [cli, ...args, '--json'], { encoding: 'utf8' }));

/** inspect's view of QEMU: its one ESB region and TIMA, checked against what QEMU 7.2 maps. */
function inspectQemu() {
  const r = xiveRemap('inspect', '--pid', String(st.qemu.pid));
  assert.equal(r.regions.length, 1, `ESB regions in QEMU: ${JSON.stringify(r.regions)}`);
  const [reg] = r.regions;
  assert.equal(reg.ipi, 'anon_inode:kvm-xive-native');
  assert.equal(reg.nrIrqs, QEMU_NR_IRQS, 'interrupts read from the region size');
  assert.equal(BigInt(reg.end) - BigInt(reg.base), BigInt(reg.nrIrqs) * BYTES_PER_IRQ);
  assert.equal(reg.mappings, 1, `mappings: ${JSON.stringify(reg.ranges)}`);
  assert.equal(reg.kernelManaged, true);
  assert.deepEqual(reg.ranges.map((x) => [x.first, x.last, x.ipi, x.offset]), [[0, QEMU_NR_IRQS - 1, true, hex(4n * PAGE)]]);
  assert.equal(r.tima.length, 1, `TIMA mappings: ${JSON.stringify(r.tima)}`);
  const [tima] = r.tima;
  assert.equal(BigInt(tima.end) - BigInt(tima.start), 4n * PAGE, 'TIMA size');
  return { base: reg.base, end: reg.end, tima: `${tima.start}-${tima.end}` };
}

/** QEMU's own maps line for its ESB mapping (read here, not by the CLI): must agree with inspect. */
function mapsLine(base) {
  const lines = fs.readFileSync(`/proc/${st.qemu.pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('kvm-xive'));
  detail(lines.join('\n'));
  return lines.find((l) => l.startsWith(`${BigInt(base).toString(16)}-`));
}

/** The check that QEMU's region is where inspect first found it, as one mapping, after a step. */
const regionUnchangedAfter = (step, done) =>
  check(`qemu: xive-remap inspect after the ${step}: QEMU's region unchanged (same address, one mapping)`, () => {
    need(done, `the ${step}`);
    assert.deepEqual(inspectQemu(), need(st.region, "inspect's first view"));
    return st.region.base;
  });

// --- the checks ---------------------------------------------------------------------------------
const memAvailable = () => /MemAvailable:\s+(\d+) kB/.exec(fs.readFileSync('/proc/meminfo', 'utf8'))?.[1];
process.on('exit', () => {
  if (alive()) st.qemu.kill('SIGKILL');
});

await check('qemu: QEMU, the L2 kernel and initramfs are in place; KVM debugfs is mounted', () => {
  for (const f of [QEMU, `${L2}/vmlinux`, `${L2}/initrd.gz`, '/dev/kvm']) assert.ok(fs.existsSync(f), `${f} missing`);
  st.layer = true;
  // Mounted here only in run.sh's emulated POWER9 (its boot layer wrote /etc/xive-power9-kernel);
  // on any other host, mounting debugfs is the operator's decision.
  if (!fs.existsSync('/sys/kernel/debug/kvm') && fs.existsSync('/etc/xive-power9-kernel')) execFileSync('mount', ['-t', 'debugfs', 'none', '/sys/kernel/debug']);
  assert.ok(fs.existsSync('/sys/kernel/debug/kvm'), 'no /sys/kernel/debug/kvm (mount -t debugfs none /sys/kernel/debug)');
  return `MemAvailable ${Math.round(memAvailable() / 1024)} MiB before QEMU`;
});

const machine = 'pseries,accel=kvm,ic-mode=xive,kernel-irqchip=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off';

/** Start QEMU and wait until its guest runs /init's command loop; returns timings for the ok line. */
async function startGuest() {
  fs.rmSync(WORK, { recursive: true, force: true });
  fs.mkdirSync(WORK, { recursive: true });
  // The emulated POWER9's KVM-HV does not advertise the speculation mitigations: without the cap-*
  // settings QEMU exits ("Requested safe cache capability level not supported by KVM").
  const args = ['-machine', machine, '-cpu', 'host', '-smp', '1', '-m', '512M', '-nodefaults', '-display', 'none',
    '-monitor', 'none', '-serial', `file:${WORK}/l2.log`,
    '-chardev', `socket,id=ctl,path=${WORK}/ctl.sock,server=on,wait=off`, '-device', 'spapr-vty,chardev=ctl',
    '-qmp', `unix:${WORK}/qmp.sock,server=on,wait=off`, '-device', 'spapr-pci-host-bridge,index=1,id=phb1',
    // A device in use on PHB 0 from boot on, as in the spike whose hot-plugs all worked (whether
    // that matters to the flake described at the hot-plug check is not known).
    '-device', 'virtio-rng-pci,id=rng0,bus=pci.0,addr=0x2',
    '-kernel', `${L2}/vmlinux`, '-initrd', `${L2}/initrd.gz`, '-append', 'console=hvc0 rdinit=/init loglevel=5'];
  st.start = Date.now();
  st.qemu = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  st.qemu.on('error', (e) => (st.stderr += `${e.message}\n`)); // e.g. ENOENT: until() then sees it gone
  st.stderr = '';
  st.qemu.stderr.setEncoding('utf8').on('data', (d) => (st.stderr += d));
  const t = () => ((Date.now() - st.start) / 1000).toFixed(1);
  st.qmp = await Qmp.connect(`${WORK}/qmp.sock`).catch(async (e) => {
    await sleep(1000); // QEMU refusing its options exits right after creating the socket: say why
    throw new Error(`QMP: ${e.message}; QEMU ${alive() ? 'runs' : `exited (${st.qemu.exitCode ?? st.qemu.signalCode})`}: ${stderrTail()}`);
  });
  let mapped;
  const mappedAt = () => (mapped ??= fs.readFileSync(`/proc/${st.qemu.pid}/maps`, 'utf8').includes('kvm-xive-native') ? t() : undefined);
  await until('output from the guest', () => (mappedAt(), console2().length > 0), 120);
  const firstOutput = t();
  await until("'l2: ready' from the guest", () => (mappedAt(), l2().some((l) => l.startsWith('ready'))), 180);
  st.ctl = await new Promise((resolve, reject) => {
    const s = net.createConnection(`${WORK}/ctl.sock`, () => {
      s.on('error', () => {}); // as for QMP: QEMU's exit ends it
      resolve(s);
    });
    s.once('error', reject);
  });
  st.readyAt = Date.now();
  return `XIVE mapped after ${mapped ?? '?'} s, guest output after ${firstOutput} s, userspace after ${t()} s`;
}

/** Stop QEMU (SIGKILL: its guest may be stuck) and close the connections. */
async function stopGuest() {
  st.qmp?.sock.destroy();
  st.ctl?.destroy();
  if (alive()) st.qemu.kill('SIGKILL');
  while (alive()) await sleep(100);
}

await check(`qemu: the L2 guest boots under QEMU with in-kernel XIVE (-machine ${machine})`, async () => {
  need(st.layer, 'QEMU and the L2 kernel and initramfs');
  const times = await startGuest();
  const irqchip = l2().find((l) => l.startsWith('irqchip: '));
  assert.equal(irqchip, 'irqchip: XIVE-IPI', 'the guest kernel drives XIVE');
  const pic = await st.qmp.hmp('info pic');
  assert.match(pic, /^irqchip: in-kernel/m, "QEMU's info pic");
  const v = st.qmp.greeting.version.qemu;
  return `QEMU ${v.major}.${v.minor}.${v.micro} pid ${st.qemu.pid}; ${times}; ${l2().find((l) => l.startsWith('mmu: '))}; ` +
    `MemAvailable ${Math.round(memAvailable() / 1024)} MiB`;
});

await check(`qemu: xive-remap inspect --pid <qemu> --json: QEMU's ESB region (${QEMU_NR_IRQS} interrupts from its size), one mapping of the device (kernel-managed), and its TIMA`, () => {
  need(st.ctl, 'a running guest');
  st.region = inspectQemu();
  const line = mapsLine(st.region.base);
  assert.ok(line, `no kvm-xive mapping starting at ${st.region.base} in /proc/${st.qemu.pid}/maps`);
  assert.match(line, / rw-s 00040000 .*anon_inode:kvm-xive-native$/, 'ESB pages shared, at page offset 4');
  return `${st.region.base}-${st.region.end} (${(BigInt(st.region.end) - BigInt(st.region.base)) >> 20n} MiB), TIMA ${st.region.tima}`;
});

await check(`qemu: xive-remap probe --json in the same host reports the ${contract} contract, and QEMU's region is untouched by it`, () => {
  need(st.region, "inspect's view of QEMU");
  const r = xiveRemap('probe');
  assert.equal(r.pageSize, Number(PAGE));
  assert.equal(r.xive.contract, contract);
  assert.equal(r.xive.esbShift, 17);
  assert.ok(alive(), 'QEMU still runs');
  assert.deepEqual(inspectQemu(), st.region);
  return `${r.xive.contract}, auto picks ${r.xive.autoMode}`;
});

await check("qemu: KVM's debugfs lists the XIVE sources of QEMU's VM, all inside the region", () => {
  need(st.region, "inspect's view of QEMU");
  st.before = kvmSources();
  assert.ok(st.before.size > 0, `no sources in ${st.debugfs}`);
  for (const lisn of st.before.keys()) assert.ok(lisn < QEMU_NR_IRQS, `source ${hex(lisn)} outside ${QEMU_NR_IRQS} interrupts`);
  return `${st.before.size} sources in ${st.debugfs}`;
});

// A hot-plug that works takes 7-15 s here; a stuck guest never answers.
const PLUG_SECONDS = 90;
// Every hot-plug that worked came 12 s or more after the guest's userspace started; one made 4 s
// after it failed (e1000e's probe returned -2), so a hot-plug waits until the guest has run that long.
const SETTLE_MS = 15000;

/** device_add + drmgr in the guest: the guest's reply, or why the guest got stuck. */
async function plug(seconds) {
  await sleep(st.readyAt + SETTLE_MS - Date.now());
  assert.deepEqual(await st.qmp.cmd('device_add', HOTPLUG), {});
  try {
    const r = await guestCommand(`plug ${DRC}`, seconds);
    if (r.rc === 0) return { r };
    return { stuck: `drmgr -a exited ${r.rc}: ${r.lines.filter((l) => l.startsWith('drmgr')).join(' | ')}` };
  } catch (e) {
    return { stuck: `${e.message}; ${console2().split('\n').filter((l) => /soft lockup|NIP \[/.test(l)).slice(0, 2).join('; ')}` };
  }
}

// In about half of the runs so far, the guest's first store to the new e1000e's registers (an MMIO
// store that KVM-HV emulates and sends to QEMU) goes wrong: the guest soft-locks re-running it in
// e1000_probe, or drmgr dies of SIGBUS there, or the guest takes an FP Unavailable exception at the
// next instruction (as if KVM had emulated another instruction than the store); on both kernels,
// with or without the checks before this script. Not understood yet; the suspect is the nested
// emulation (KVM-HV inside QEMU's TCG POWER9), since the same QEMU, kernel and guest pass in the
// other runs. So a stuck guest gets up to two more tries, each on a new QEMU, said in the ok line
// and in # lines, never silently; a guest stuck on every try fails the check.
const PLUG_ATTEMPTS = 3;
await check(`qemu: QMP device_add ${HOTPLUG.driver} onto the second PHB, then drmgr in the guest: the driver binds with MSIs`, async () => {
  need(st.before, 'the sources before the hot-plug');
  let t = Date.now();
  let p = await plug(PLUG_SECONDS);
  const stuck = [];
  while (p.stuck) {
    stuck.push(p.stuck.split(';')[0]);
    if (stuck.length >= PLUG_ATTEMPTS) throw new Error(`the guest got stuck on all ${PLUG_ATTEMPTS} tries; last time: ${p.stuck}`);
    detail(`the guest got stuck in the hot-plug (${p.stuck}); once more on a new QEMU`);
    await stopGuest();
    await startGuest();
    st.region = inspectQemu();
    st.before = kvmSources();
    t = Date.now();
    p = await plug(PLUG_SECONDS);
  }
  const retried = stuck.length ? `; on QEMU number ${stuck.length + 1}, the guest before got stuck: ${stuck.join(' | ')}` : '';
  const { msi, counts } = guestDevices(p.r.lines);
  const dev = msi.find((d) => d.bdf === '0001:00:00.0');
  assert.ok(dev, `no MSI device at 0001:00:00.0: ${JSON.stringify(msi)}`);
  assert.equal(dev.driver, HOTPLUG.driver);
  assert.ok(dev.irqs.length > 0);
  st.plugged = { irqs: dev.irqs, counts };
  return `${DRC} → 0001:00:00.0 ${dev.driver}, guest irqs ${dev.irqs.join(' ')}, ${((Date.now() - t) / 1000).toFixed(1)} s${retried}`;
});

await check("qemu: the device's MSIs are new KVM XIVE sources routed to the guest's interrupts, and carry interrupts", async () => {
  const { irqs, counts } = need(st.plugged, 'the hot-plugged device');
  st.after = kvmSources();
  st.added = [...st.after.keys()].filter((l) => !st.before.has(l)).sort((a, b) => a - b);
  assert.ok(st.added.length >= irqs.length, `new sources ${st.added.map(hex).join(' ')} for ${irqs.length} MSIs`);
  // Linux's XIVE gives a source its Linux interrupt number as EISN: that links KVM's sources to the guest's.
  for (const irq of irqs) {
    const lisn = st.added.find((l) => st.after.get(l).eisn === irq);
    assert.ok(lisn !== undefined, `no new source with EISN ${irq}: ${st.added.map((l) => showSource(l, st.after.get(l))).join(', ')}`);
    const s = st.after.get(lisn);
    assert.notEqual(s.prio, 255, `source ${hex(lisn)} (guest irq ${irq}) is not routed`);
  }
  const total = irqs.reduce((n, i) => n + (counts.get(i)?.count ?? 0), 0);
  assert.ok(total > 0, `the guest counted no interrupt on ${irqs.join(' ')}`);
  const pic = picLisns(await st.qmp.hmp('info pic'));
  for (const lisn of st.added.filter((l) => st.after.get(l).prio !== 255)) assert.ok(pic.has(lisn), `QEMU's info pic lacks ${hex(lisn)}`);
  detail(st.added.map((l) => showSource(l, st.after.get(l))).join('\n'));
  return `sources ${st.added.map(hex).join(' ')}; guest counts ${irqs.map((i) => `${counts.get(i)?.name}=${counts.get(i)?.count}`).join(' ')}`;
});

await regionUnchangedAfter('hot-plug', st.after);

await check('qemu: QMP device_del, then drmgr -r in the guest: the device is gone from the guest and from QEMU', async () => {
  need(st.after, 'the hot-plug');
  assert.deepEqual(await st.qmp.cmd('device_del', { id: HOTPLUG.id }), {});
  const r = await guestCommand(`unplug ${DRC}`, 90);
  assert.equal(r.rc, 0, `drmgr -r: ${r.lines.filter((l) => l.startsWith('drmgr')).join(' | ')}`);
  assert.deepEqual(guestDevices(r.lines).msi.filter((d) => d.bdf === '0001:00:00.0'), []);
  await until(`QMP DEVICE_DELETED for ${HOTPLUG.id}`, () => st.qmp.events.some((e) => e.event === 'DEVICE_DELETED' && e.data?.device === HOTPLUG.id), 60);
  const pci = await st.qmp.cmd('query-pci');
  const ids = pci.flatMap((b) => b.devices.map((d) => d.qdev_id));
  assert.ok(!ids.includes(HOTPLUG.id), `query-pci still lists ${HOTPLUG.id}`);
  st.unplugged = true;
  return `QEMU devices left: ${ids.join(' ') || 'none'}`;
});

// What QEMU 7.2 does on unplug: spapr_irq_free() clears the interrupt in QEMU's own model only, and
// the KVM XIVE device has no call to free a source. So KVM keeps the sources; they are harmless as
// long as they are masked, which the guest's driver did when it freed them (PQ 01: no interrupt can
// be sent), and a later claim of the same LISN configures the source anew. The check pins that
// down: a source left *unmasked* after unplug would be a real bug (its routing still points into
// the guest), and a QEMU that does free the sources makes the check fail so the README is revisited.
await check('qemu: after the unplug QEMU has freed the interrupts, but KVM keeps the sources, masked (PQ 01), with their old routing', async () => {
  need(st.unplugged, 'the unplug');
  const pic = picLisns(await st.qmp.hmp('info pic'));
  const now = kvmSources();
  for (const lisn of st.added) {
    assert.ok(!pic.has(lisn), `QEMU's info pic still lists ${hex(lisn)}`);
    const s = now.get(lisn);
    assert.ok(s, `KVM no longer has source ${hex(lisn)}: the finding no longer holds (see the README)`);
    assert.equal(s.pq, '-Q', `source ${hex(lisn)} is not masked after the unplug: ${showSource(lisn, s)}`);
    const was = st.after.get(lisn);
    assert.deepEqual([s.eisn, s.server, s.prio], [was.eisn, was.server, was.prio], `routing of ${hex(lisn)} changed: ${showSource(lisn, was)} → ${showSource(lisn, s)}`);
  }
  return st.added.map((l) => showSource(l, now.get(l))).join(', ');
});

await regionUnchangedAfter('unplug', st.unplugged);

await check('qemu: the guest powers off and QEMU exits with status 0', async () => {
  need(st.ctl, 'a running guest');
  st.ctl.write('off\n');
  const end = Date.now() + 30000;
  while (alive() && Date.now() < end) await sleep(250);
  assert.ok(!alive(), 'QEMU still runs 30 s after the guest was told to power off');
  assert.equal(st.qemu.exitCode, 0, `exit ${st.qemu.exitCode ?? st.qemu.signalCode}: ${stderrTail()}`);
});

await stopGuest();
const tail = console2().trim().split('\n').slice(-30).join('\n');
if (tail) detail(`last lines of the L2 console (${WORK}/l2.log):\n${tail}`);
detail(`QEMU stage: ${since()} s`);
finish(basename(process.argv[1], '.mjs')); // qemu-checks
