/**
 * `xive-remap demo`: the hot-plug story on the fake devices, checked at every step by reading
 * memory. A fake XIVE device of 4096 interrupts backs the region; device pt1 is hot-plugged as an
 * MSI block and two single interrupts, pt2 as one interrupt and a small block, then pt1 is
 * unplugged. After each step the demo reads every interrupt's stamps back through the region,
 * counts the region's VMAs in /proc/self/maps, compares the memslot with the one from open, and
 * has `esb.audit()` check every VMA's file and offset against the table (no hole, nothing moved).
 */
import { EsbController } from '../index.js';
import { mapsIn, realNative } from '../internal.js';
import { FakePassthroughDevice, FakeXiveDevice, expectedStamp, readStamp } from '../../native-stubs/index.js';
import { KvmX86Guest } from '../../native-stubs/kvm-x86-guest.js';
import { esbOffset } from '../geometry.js';

/** What one step of the demo saw. */
export interface DemoStep {
  /** What was done. */
  readonly action: string;
  /** Passthrough runs after it, as `first-last←source`. */
  readonly map: string[];
  /** VMAs of the region in /proc/self/maps, and the bound 2 × runs + 1. */
  readonly vmas: number;
  /** The bound the VMA count must stay under. */
  readonly vmaBound: number;
  /** Interrupts whose stamps did not match backingOf (empty when all is well). */
  readonly wrongStamps: string[];
  /** Whether the memslot address and size are those of open. */
  readonly memslotUnchanged: boolean;
  /** What `esb.audit()` found wrong in /proc/self/maps (holes, wrong file or offset): empty when all is well. */
  readonly audit: string[];
  /** What an optional observer (the KVM guest) saw, if any. */
  readonly guest?: string;
}

/** The demo's outcome. */
export interface DemoResult {
  /** Interrupts, esbShift and the region. */
  readonly region: { nrIrqs: number; esbShift: number; userspaceAddr: string; size: string };
  /** Every step, in order. */
  readonly steps: DemoStep[];
  /** Whether every check passed. */
  readonly ok: boolean;
}

/** Something that looks at the region after each step (e.g. a KVM guest reading its pages). */
export interface DemoObserver {
  /** Called once after open. */
  start(esb: EsbController): void;
  /** Look at these interrupts after a step; return a one-line report, or throw if what it saw is wrong. */
  look(esb: EsbController, irqs: number[]): string;
  /** Called at the end. */
  stop(): void;
}

function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}

/** Run the demo; never throws for a failed check (see `ok`), only for a broken environment. */
export function runDemo(observer?: DemoObserver): DemoResult {
  const dev = FakeXiveDevice.create({ nrIrqs: 4096 });
  const pt1 = FakePassthroughDevice.create({ nrIrqs: 64, id: 1 });
  const pt2 = FakePassthroughDevice.create({ nrIrqs: 8, id: 2 });
  const esb = EsbController.open(dev);
  const slot = { ...esb.memslot };
  const steps: DemoStep[] = [];
  try {
    observer?.start(esb);
    const step = (action: string, touched: number[], change: () => void): void => {
      change();
      // The guest looks first: its very next load after the change must see the new pages.
      let guest: string | undefined;
      try {
        guest = observer?.look(esb, touched);
      } catch (e) {
        guest = `FAILED: ${(e as Error).message}`;
      }
      const { userspaceAddr, size } = esb.memslot;
      const wrongStamps: string[] = [];
      for (let irq = 0; irq < esb.nrIrqs; irq++) {
        for (let p = 0 as 0 | 1; p < esb.geometry.pagesPerIrq; p++) {
          const got = readStamp(esb, irq, p);
          const want = expectedStamp(esb, irq, p);
          if (got !== want) wrongStamps.push(`${irq}:${p} read ${got}, want ${want}`);
        }
      }
      const runs = esb.runs();
      steps.push({
        action,
        map: runs.map((r) => {
          const last = r.first + r.count - 1;
          const src = r.source.split(':');
          const srcLast = Number(src[1]) + r.count - 1;
          return r.count === 1 ? `${r.first}←${r.source}` : `${r.first}-${last}←${r.source}-${srcLast}`;
        }),
        vmas: mapsIn(realNative.readMaps(), userspaceAddr, userspaceAddr + size).length,
        vmaBound: 2 * runs.length + 1,
        wrongStamps,
        memslotUnchanged: userspaceAddr === slot.userspaceAddr && size === slot.size,
        audit: esb.audit().map((d) => `${d.kind} ${d.first}-${d.last}: ${d.found}`),
        ...(guest === undefined ? {} : { guest }),
      });
    };
    step('open: all 4096 interrupts on IPI pages', [0, 64, 200, 300, 4095], () => {});
    step('hot-plug pt1: MSI block 64-79 ← pt1 0-15 (attachRange: one mmap)', range(64, 16), () => esb.attachRange(64, 16, pt1.pages(0, 16)));
    step('hot-plug pt1: 200 ← pt1 20, 201 ← pt1 21 (attach)', [200, 201], () => {
      esb.attach(200, pt1.pages(20));
      esb.attach(201, pt1.pages(21));
    });
    step('hot-plug pt2: 300 ← pt2 0, MSI block 310-313 ← pt2 4-7', [300, ...range(310, 4)], () => {
      esb.attach(300, pt2.pages(0));
      esb.attachRange(310, 4, pt2.pages(4, 4));
    });
    step('hot-unplug pt1: detachRange 64-79, detach 200 and 201', [...range(64, 16), 200, 201], () => {
      esb.detachRange(64, 16);
      esb.detach(200);
      esb.detach(201);
    });
    const ok = steps.every((s) => s.wrongStamps.length === 0 && s.memslotUnchanged && s.audit.length === 0 && s.vmas <= s.vmaBound && !s.guest?.startsWith('FAILED'));
    return {
      region: { nrIrqs: esb.nrIrqs, esbShift: esb.geometry.esbShift, userspaceAddr: `0x${slot.userspaceAddr.toString(16)}`, size: `0x${slot.size.toString(16)}` },
      steps,
      ok,
    };
  } finally {
    observer?.stop();
    esb.close();
    dev.close();
    pt1.close();
    pt2.close();
  }
}

/** The demo as text for a terminal; `noGuest`, if given, says why no KVM guest looked (before the verdict, which ends the text). */
export function renderDemo(r: DemoResult, noGuest?: string): string {
  const mib = Number(BigInt(r.region.size) >> 20n);
  const lines = [
    `xive-remap demo: fake XIVE device, ${r.region.nrIrqs} interrupts, esbShift ${r.region.esbShift}; region ${r.region.userspaceAddr} (${mib} MiB) = the one memslot`,
    '',
  ];
  r.steps.forEach((s, i) => {
    const checks = [
      s.wrongStamps.length === 0 ? `stamps ok (${r.region.nrIrqs} irqs read)` : `STAMPS WRONG: ${s.wrongStamps.slice(0, 3).join('; ')}`,
      `VMAs ${s.vmas} ≤ ${s.vmaBound}${s.vmas <= s.vmaBound ? '' : ' EXCEEDED'}`,
      s.memslotUnchanged ? 'memslot unchanged' : 'MEMSLOT MOVED',
      s.audit.length === 0 ? '/proc/self/maps agrees' : `MAPS DISAGREE: ${s.audit.slice(0, 2).join('; ')}`,
    ];
    lines.push(`${i + 1}. ${s.action}`);
    lines.push(`   passthrough: ${s.map.length ? s.map.join(', ') : '(none: all IPI)'}`);
    lines.push(`   ${checks.join(' · ')}`);
    if (s.guest !== undefined) lines.push(`   guest: ${s.guest}`);
  });
  lines.push('');
  if (noGuest !== undefined) lines.push(`(no KVM guest view: ${noGuest})`);
  lines.push(r.ok ? 'all checks passed' : 'SOME CHECKS FAILED');
  return lines.join('\n');
}

/**
 * The guest's view, where /dev/kvm is usable on x86_64: a real KVM guest whose one memslot is the
 * region reads each touched interrupt's trigger page after every step. Returns undefined (with
 * the reason in `why`) where it cannot run.
 */
export function kvmGuestObserver(): { observer?: DemoObserver; why?: string } {
  const why = KvmX86Guest.usable();
  if (why !== null) return { why };
  let guest: KvmX86Guest | undefined;
  return {
    observer: {
      start(esb) {
        guest = KvmX86Guest.create({ memslot: esb.memslot });
      },
      look(esb, irqs) {
        const g = guest as KvmX86Guest;
        const wrong = irqs.filter((irq) => g.readString(esbOffset(esb.geometry, irq, 0)) !== expectedStamp(esb, irq, 0));
        if (wrong.length > 0) throw new Error(`the guest read stale pages for interrupts ${wrong.join(', ')}`);
        if (g.memslotUpdates !== 1) throw new Error(`the region's memslot was updated ${g.memslotUpdates} times`);
        const sample = irqs[0] as number;
        return `KVM guest read ${irqs.length} touched interrupt(s) on its next load, all right (irq ${sample}: ${g.readString(esbOffset(esb.geometry, sample, 0))}); memslot registrations: ${g.memslotUpdates}`;
      },
      stop() {
        guest?.close();
      },
    },
  };
}
