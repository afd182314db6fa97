/**
 * A small VMM's device-hotplug path, bringing its own VM: the VMM creates its VM and its XIVE
 * device with its own ioctls (through `xive-remap/kvm`, as a Node VMM would; QEMU's
 * `kvmppc_xive_connect` does the same in C), and hands the raw fds to xive-remap, which works on
 * duplicates and never closes the VMM's. Run: `node dist/examples/vmm-hotplug.js [--json] [--no-guest]`.
 *
 *   VMM:        KVM_CREATE_VM → KVM_CREATE_DEVICE (XIVE) → NR_SERVERS → KVM_DEV_XIVE_GRP_SOURCE × 64
 *   xive-remap: KvmVm.fromFd(vmFd) → XiveKvmDevice.fromFd(devFd, { nrIrqs, configured }) → EsbController
 *   VMM:        the region registered as ONE memslot on its VM (MemslotTable on the KvmVm), once
 *   hot-plug:   an MSI block (attachRange 16–19 ← sources 40–43), a single interrupt (attach 30 ← 45),
 *               then unplug (detachRange, detach); after each step the guest loads the interrupts
 *   teardown:   guest, memslot, region, the library's objects; the VMM's fds still work; the VMM closes them
 *
 * On a POWER9/10 host with KVM-HV (and in `npm run test:power`), the guest is `KvmPpcGuest` on the
 * VMM's VM, reading through the VMM's memslot: ESB_GET loads, so it sees PQ bits. The passthrough
 * device's pages are the XIVE device's own sources 40–47 (real ESB pages of real sources), each
 * given PQ bits unlike the guest interrupt it lands on. With the stock kernel ('fixed-offset') mode
 * 'auto' is kernel-managed: the table records the plug, the kernel would swap pages for a real
 * passthrough interrupt, so the guest keeps seeing its IPIs; with kernel/'s patch ('per-irq-
 * offsets') it is overlay and the guest sees the sources' PQ bits on its next load.
 *
 * Elsewhere there is no XIVE device, so the VMM's VM is a real x86 KVM VM taken with
 * `KvmVm.fromFd` (where /dev/kvm is usable), the XIVE device is the memfd-backed fake, and
 * `KvmX86Guest` on the VMM's VM reads the pages' stamps through the VMM's memslot. Without a
 * usable /dev/kvm the host reads through the region instead, and says so.
 *
 * Every step is checked: what the guest loads must be what the controller's table says it should
 * (overlay: the backing's pages; kernel-managed: the IPI pages), or the example exits 1.
 */
import { parseArgs } from 'node:util';
import { EsbController, RemapError, XiveKvmDevice, esbOffset, formatPq, type EsbDevice, type PageSource, type Pq } from 'xive-remap';
import { KVM_CAP, KVM_DEV_TYPE, KVM_DEV_XIVE, KvmSystem, KvmVm, MemslotTable, type KvmDevice, type KvmMemslot } from 'xive-remap/kvm';
import { FakePassthroughDevice, FakeXiveDevice, KvmPpcGuest, KvmX86Guest, readStamp } from 'xive-remap/native-stubs';

const NR_IRQS = 64;
/** Where the VMM puts the ESB region in guest-physical space. */
const ESB_GPA = 4n << 30n;
/** The hot-plugged device: an MSI block of 4 and a single interrupt. */
const MSI = { guest: 16, count: 4, source: 40 };
const SINGLE = { guest: 30, source: 45 };
/** The guest interrupts the guest loads after each step (neighbours included). */
const WATCHED = [15, 16, 17, 18, 19, 20, 30];

const { values: args } = parseArgs({ options: { json: { type: 'boolean', default: false }, 'no-guest': { type: 'boolean', default: false } } });
const lines: string[] = [];
const say = (s: string): void => {
  if (!args.json) console.log(s);
  lines.push(s);
};
const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** PQ bits the example gives source `s` on POWER: a guest interrupt and the source plugged over it always differ. */
const pqOf = (s: number): Pq => ((s < 32 ? s : s + 2) % 4) as Pq;

/** The VMM's own KVM objects: made with its own ioctls, closed by it. */
interface Vmm {
  readonly sys: KvmSystem;
  readonly vm: KvmVm;
  readonly xive: KvmDevice | undefined;
  close(): void;
}

/** The VMM: its VM, and on POWER its XIVE device with NR_SERVERS and every source created, as QEMU does. */
function vmmCreates(power: boolean): Vmm {
  const sys = KvmSystem.open();
  const vm = sys.createVm();
  let xive: KvmDevice | undefined;
  if (power) {
    xive = vm.createDevice(KVM_DEV_TYPE.XIVE);
    xive.setAttrU32(KVM_DEV_XIVE.GRP_CTRL, KVM_DEV_XIVE.NR_SERVERS, 1);
    for (let irq = 0; irq < NR_IRQS; irq++) xive.setAttrU64(KVM_DEV_XIVE.GRP_SOURCE, irq, 0n); // an MSI each
  }
  return {
    sys,
    vm,
    xive,
    close() {
      xive?.close();
      vm.close();
      sys.close();
    },
  };
}

/** What a guest (or, without one, the host) loads at an interrupt: a stamp on the fakes, PQ bits on POWER. */
type Reader = { readonly who: string; read(irq: number): string; close(): void };

interface Step {
  readonly step: string;
  readonly seen: Record<number, string>;
  readonly expected: Record<number, string>;
}

function main(): number {
  const power = process.arch === 'ppc64';
  let vmm: Vmm | undefined;
  let noKvm: string | undefined;
  try {
    vmm = vmmCreates(power);
  } catch (e) {
    if (power || !(e instanceof RemapError) || e.code !== 'E_DEVICE_UNAVAILABLE') throw e;
    noKvm = e.message;
  }
  const vmFd = vmm?.vm.fd;
  const devFd = vmm?.xive?.fd;
  say(
    vmm
      ? `vmm: its own VM fd ${vmFd}${devFd === undefined ? '' : `, XIVE device fd ${devFd} (KVM_CREATE_DEVICE type ${KVM_DEV_TYPE.XIVE}, NR_SERVERS 1, ${NR_IRQS} sources created)`}`
      : `vmm: no VM (${noKvm}); the region is not registered anywhere`,
  );

  // --- the hot-plug path: xive-remap takes the VMM's fds (duplicates; the VMM keeps its own) ---
  const vm = vmFd === undefined ? undefined : KvmVm.fromFd(vmFd);
  let dev: EsbDevice & { close(): void };
  if (devFd !== undefined) {
    const all = Array.from({ length: NR_IRQS }, (_, i) => i);
    dev = XiveKvmDevice.fromFd(devFd, { nrIrqs: NR_IRQS, vm, configured: all });
    say(`xive-remap: KvmVm.fromFd(${vmFd}), XiveKvmDevice.fromFd(${devFd}, { nrIrqs: ${NR_IRQS} }): contract ${dev.contract}`);
  } else {
    dev = FakeXiveDevice.create({ nrIrqs: NR_IRQS });
    say(`xive-remap: ${vm ? `KvmVm.fromFd(${vmFd}); ` : ''}no XIVE device on ${process.arch}: the memfd-backed FakeXiveDevice stands in`);
  }
  const esb = EsbController.open(dev, { mode: 'auto' });
  const g = esb.geometry;
  const { userspaceAddr, size } = esb.memslot;
  say(`controller: mode 'auto' picked ${esb.mode}; region ${hex(userspaceAddr)} + ${hex(size)}`);

  // --- the VMM registers the region as ONE memslot of its VM, once ---
  const slots = vm ? MemslotTable.open(vm) : undefined;
  const region: KvmMemslot | undefined = slots?.add({ guestPhysAddr: ESB_GPA, size, userspaceAddr });
  if (slots && region) say(`vmm: ${slots.describe(region.slot)} registered once`);

  // On POWER, give every source PQ bits a guest can tell apart (loads through the region, before any plug).
  const xiveDev = dev instanceof XiveKvmDevice ? dev : undefined;
  if (xiveDev) for (let s = 0; s < NR_IRQS; s++) xiveDev.esbSetPq(userspaceAddr, s, pqOf(s));

  // --- the guest, on the VMM's VM, reading through the VMM's memslot ---
  const reader = openReader(xiveDev, esb, vm, slots, region);
  say(`guest: ${reader.who}`);

  // The passthrough device: sources of the XIVE device itself on POWER, a fake one elsewhere.
  const pt = xiveDev ? undefined : FakePassthroughDevice.create({ nrIrqs: 64, id: 1, esbShift: g.esbShift });
  const pages = (first: number, count = 1): PageSource => (xiveDev ? xiveDev.pages(first, count) : (pt as FakePassthroughDevice).pages(first, count));

  /** What the guest must load at `irq` now: the table's backing in overlay, the IPI pages in kernel-managed. */
  const expected = (irq: number): string => {
    const b = esb.backingOf(irq);
    const overlaid = b.kind === 'passthrough' && esb.mode === 'overlay';
    if (xiveDev) return formatPq(pqOf(overlaid && b.kind === 'passthrough' ? Number(b.source.split(':')[1]) : irq));
    return overlaid && b.kind === 'passthrough' ? `${b.source}:0` : `ipi:${irq}:0`;
  };
  const steps: Step[] = [];
  const look = (step: string): void => {
    const seen: Record<number, string> = {};
    const want: Record<number, string> = {};
    for (const irq of WATCHED) {
      seen[irq] = reader.read(irq);
      want[irq] = expected(irq);
    }
    steps.push({ step, seen, expected: want });
    const bad = WATCHED.filter((irq) => seen[irq] !== want[irq]);
    say(`${step.padEnd(44)} loads: ${WATCHED.map((irq) => `${irq}=${seen[irq]}`).join(' ')}${bad.length ? `   MISMATCH at ${bad.join(',')}` : ''}`);
  };

  look('before hot-plug');
  esb.attachRange(MSI.guest, MSI.count, pages(MSI.source, MSI.count));
  look(`plug MSI block: attachRange(${MSI.guest}, ${MSI.count}, ${MSI.source}-${MSI.source + MSI.count - 1})`);
  esb.attach(SINGLE.guest, pages(SINGLE.source));
  look(`plug single: attach(${SINGLE.guest}, ${SINGLE.source})`);
  say(`  backingOf(${MSI.guest}) = ${JSON.stringify(esb.backingOf(MSI.guest), (_k, v: unknown) => (typeof v === 'bigint' ? hex(v) : v))}`);
  esb.detachRange(MSI.guest, MSI.count);
  esb.detach(SINGLE.guest);
  look('unplug: detachRange, detach');
  const memslotUpdates = slots && region ? slots.updates(region.slot) : 0;
  if (slots && region) say(`vmm: KVM_SET_USER_MEMORY_REGION calls for slot ${region.slot}: ${memslotUpdates}`);

  // --- teardown: guest, memslot (before the pages under it go), region, the library's objects ---
  reader.close();
  if (slots && region) slots.remove(region.slot);
  esb.close();
  dev.close();
  pt?.close();
  vm?.close();
  // The VMM's own fds are still open and still KVM's: closing the library's objects closed only their duplicates.
  let vmmFdsWork = true;
  if (vmm) {
    vmmFdsWork = vmm.vm.checkExtension(KVM_CAP.USER_MEMORY) > 0 && (!vmm.xive || vmm.xive.hasAttr(KVM_DEV_XIVE.GRP_CTRL, KVM_DEV_XIVE.RESET));
    say(`teardown: the library's objects are closed; the VMM's own fds still answer KVM ioctls (${vmm.vm.describe()}${vmm.xive ? `, ${vmm.xive.describe()}` : ''}): ${vmmFdsWork}`);
    vmm.close();
  }
  const ok = vmmFdsWork && steps.every((s) => WATCHED.every((irq) => s.seen[irq] === s.expected[irq])) && (!region || memslotUpdates === 1);
  if (args.json) {
    console.log(
      JSON.stringify({
        platform: xiveDev ? 'power' : 'fake',
        vmFromFd: vm !== undefined,
        deviceFromFd: xiveDev !== undefined,
        contract: dev.contract,
        mode: esb.mode,
        guest: reader.who,
        steps,
        memslotUpdates,
        vmmFdsWork,
        ok,
      }),
    );
  }
  return ok ? 0 : 1;
}

/** The guest on the VMM's VM reading through its memslot; or, without one, the host through the region. */
function openReader(xiveDev: XiveKvmDevice | undefined, esb: EsbController, vm: KvmVm | undefined, slots: MemslotTable | undefined, region: KvmMemslot | undefined): Reader {
  const g = esb.geometry;
  const base = esb.memslot.userspaceAddr;
  const why = args['no-guest'] ? '--no-guest' : !vm || !slots || !region ? 'no VM' : (xiveDev ? KvmPpcGuest : KvmX86Guest).usable();
  if (why === null && vm && slots && region) {
    if (xiveDev) {
      const guest = KvmPpcGuest.create({ vm, slots, region });
      // ESB_GET: the management page + 0x800, PQ in the low bits of the big-endian doubleword.
      return { who: 'KvmPpcGuest on the VMM\'s VM, through its memslot (ESB_GET loads: PQ)', read: (irq) => formatPq(Number(guest.read64(esbOffset(g, irq, 1) + 0x800n) & 3n) as Pq), close: () => guest.close() };
    }
    const guest = KvmX86Guest.create({ vm, slots, region });
    return { who: "KvmX86Guest on the VMM's VM, through its memslot (trigger page stamps)", read: (irq) => guest.readString(esbOffset(g, irq, 0)), close: () => guest.close() };
  }
  const host = `the host through the region (no guest: ${why})`;
  if (xiveDev) return { who: host, read: (irq) => formatPq(xiveDev.esbGet(base, irq)), close: () => undefined };
  return { who: host, read: (irq) => readStamp(esb, irq, 0), close: () => undefined };
}

process.exitCode = main();
