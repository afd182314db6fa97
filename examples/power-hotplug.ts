/**
 * Hot-plug one passthrough interrupt on a POWER9/10 host, the way a VMM's device-hotplug path does
 * it with xive-remap: VM + KVM XIVE device → EsbController (mode 'auto') → the region registered as
 * ONE memslot → attach a passthrough source given as fd + offset → detach → teardown. It prints
 * what each step did, and in particular what the controller did (and did not do) in the mode the
 * device's contract made it pick.
 *
 *   node dist/examples/power-hotplug.js --source-fd 3 --source-offset 0x20000 [--source-length 0x80000]
 *        [--size-is-fixed] [--guest-irq 5] [--nr-irqs 16]
 *
 * The source fd must be open read-write in this process (e.g. a VFIO device region, the XIVE device
 * itself at another interrupt's offset, or a memfd standing in for one, sealed with F_SEAL_SHRINK:
 * stdio [.., fd] from Node). A plain file (`3<>/path` in a shell) needs --size-is-fixed: the
 * caller's promise that nothing truncates it (PageSource.fromFd's `sizeIsFixed`). Without
 * --source-fd, a FakePassthroughDevice (memfd) stands in.
 *
 * Needs a POWER host with kvm-hv (native-stubs/power9/run.sh runs it in an emulated one); elsewhere
 * it says what is missing and exits 1.
 */
import { parseArgs } from 'node:util';
import { EsbController, PageSource, RemapError, XiveKvmDevice, formatPq, type MappingEvent } from 'xive-remap';
import { MemslotTable } from 'xive-remap/kvm';
import { FakePassthroughDevice } from 'xive-remap/native-stubs';

/** Guest-physical address where the example places the ESB region (any free, page-aligned range). */
const ESB_GPA = 0x1_0000_0000n;

const hex = (v: bigint | number): string => `0x${v.toString(16)}`;
const say = (s: string): void => void process.stdout.write(`${s}\n`);

function parse(): { fd: number | undefined; offset: bigint; length: bigint | undefined; sizeIsFixed: boolean; irq: number; nrIrqs: number } {
  const { values } = parseArgs({
    options: {
      'source-fd': { type: 'string' },
      'source-offset': { type: 'string', default: '0' },
      'source-length': { type: 'string' },
      'size-is-fixed': { type: 'boolean', default: false },
      'guest-irq': { type: 'string', default: '5' },
      'nr-irqs': { type: 'string', default: '16' },
    },
  });
  return {
    fd: values['source-fd'] === undefined ? undefined : Number(values['source-fd']),
    offset: BigInt(values['source-offset']),
    length: values['source-length'] === undefined ? undefined : BigInt(values['source-length']),
    sizeIsFixed: values['size-is-fixed'] ?? false,
    irq: Number(values['guest-irq']),
    nrIrqs: Number(values['nr-irqs']),
  };
}

function main(): number {
  const args = parse();

  // 1. The VM and its XIVE device. open() probes the device contract without touching an ESB page.
  let dev: XiveKvmDevice;
  try {
    dev = XiveKvmDevice.open({ nrIrqs: args.nrIrqs, nrServers: 1 });
  } catch (e) {
    if (e instanceof RemapError && e.code === 'E_DEVICE_UNAVAILABLE') {
      say(`power-hotplug: this example needs a POWER9/10 KVM host. ${e.message}`);
      return 1;
    }
    throw e;
  }
  const g = dev.geometry;
  say(`device: KVM XIVE device fd ${dev.fd} on a new VM; contract ${dev.contract}; esbShift ${g.esbShift} (${g.pagesPerIrq} × ${g.esbPageSize / 1024n} KiB pages per interrupt)`);

  // 2. The region: every IPI ESB page mapped once, as one range.
  const esb = EsbController.open(dev, { mode: 'auto' });
  const { userspaceAddr, size } = esb.memslot;
  say(`controller: mode 'auto' picked ${esb.mode} (the device is ${esb.contract}); region ${hex(userspaceAddr)} + ${hex(size)} (${esb.nrIrqs} interrupts)`);

  // 3. ONE memslot for the whole region, registered once.
  const vm = dev.vm; // open() made the VM (a device from fromFd has the VM the VMM gave it, if any)
  if (!vm) throw new Error('XiveKvmDevice.open returned a device without its VM');
  const slots = MemslotTable.open(vm);
  const slot = slots.add({ guestPhysAddr: ESB_GPA, size, userspaceAddr });
  say(`memslot: ${slots.describe(slot.slot)}; KVM_CAP_NR_MEMSLOTS ${slots.limit}`);

  // A component that shadows the mappings (a migration tracker, say) sees every change.
  const events: MappingEvent[] = [];
  const watcher = esb.register({ name: 'example-watcher', handles: { pagesPerIrq: [2], kernelManaged: true }, unmap: (e) => void events.push(e), map: (e) => void events.push(e) });

  // 4. The passthrough source, validated now (fstat, alignment, access mode, a size that cannot
  //    shrink, a trial mmap): no SIGBUS later.
  let source: PageSource;
  let stand: FakePassthroughDevice | undefined;
  if (args.fd === undefined) {
    stand = FakePassthroughDevice.create({ nrIrqs: 8, id: 1, esbShift: g.esbShift });
    source = stand.pages(0);
    say(`source: no --source-fd given: a FakePassthroughDevice (memfd fd ${stand.fd}) stands in, its interrupt 0`);
  } else {
    const { fd, offset, length, sizeIsFixed } = args;
    source = PageSource.fromFd(fd, offset, 1, { geometry: g, name: `fd${fd}`, sizeIsFixed, ...(length === undefined ? {} : { length }) });
    say(`source: fd ${fd} offset ${hex(offset)}: one interrupt's ${g.pagesPerIrq} pages, validated (fstat, alignment, read-write, size fixed, trial mmap)`);
  }

  // 5. Attach, then detach, and show what happened.
  const before = esb.stats().syscalls;
  esb.attach(args.irq, source);
  source.close(); // the region keeps its own hold on the fd
  const b = esb.backingOf(args.irq);
  say(`attach(${args.irq}): backingOf -> ${b.kind === 'passthrough' ? `passthrough ${b.source} @ ${hex(b.sourceOffset)}` : b.kind}`);
  const attachCalls = esb.stats().syscalls - before;
  if (esb.mode === 'kernel-managed') {
    say(`  kernel-managed: ${attachCalls} system calls on the region; nothing was mapped over it (audit: ${JSON.stringify(esb.audit())}).`);
    say(`  The table records the passthrough interrupt and the notifiers were told; swapping the pages the guest sees`);
    say(`  is the kernel's job on this kernel (kvmppc_xive_set_mapped: unmap_mapping_range + its fault handler).`);
  } else {
    say(`  overlay: ${attachCalls} mmap(MAP_FIXED) put the source's pages over interrupt ${args.irq}'s IPI pages (audit: ${JSON.stringify(esb.audit())})`);
  }
  say(`  notifier events: ${events.map((e) => `${e.kind} ${e.first}+${e.count} (${e.backing.kind})`).join(', ')}`);
  events.length = 0;

  const restored = esb.detach(args.irq);
  say(`detach(${args.irq}): ${restored ? 'restored the IPI pages' : 'was IPI already'}; backingOf -> ${esb.backingOf(args.irq).kind}; ${esb.stats().syscalls - before - attachCalls} system calls`);
  say(`  notifier events: ${events.map((e) => `${e.kind} ${e.first}+${e.count} (${e.backing.kind})`).join(', ')}`);
  say(`memslot: KVM_SET_USER_MEMORY_REGION calls for slot ${slot.slot}: ${slots.updates(slot.slot)} (registered once, never touched by attach/detach)`);

  // 6. A configured source reads its PQ bits through the region (the kernel leaves a new source masked: 01).
  dev.setSourceState(0);
  say(`esb: source 0 configured; ESB_GET through the region reads PQ=${formatPq(dev.esbGet(userspaceAddr, 0))}`);

  // 7. Teardown: the memslot goes first (the region's pages must not vanish under a live slot).
  watcher.dispose();
  slots.remove(slot.slot);
  esb.close();
  dev.close();
  stand?.close();
  say('teardown: memslot deleted, region unmapped, device and VM closed');
  return 0;
}

process.exitCode = main();
