/**
 * The hot-plug demo (`npm start`): the hot-plug story on the fake devices, checked at every step by
 * reading memory. A fake XIVE device of 4096 interrupts backs the region; device pt1 is hot-plugged
 * as an MSI block and two single interrupts, pt2 as one interrupt and a small block, then pt1 is
 * unplugged. After each step the demo reads every interrupt's stamps back through the region,
 * counts the region's VMAs in /proc/self/maps, compares the memslot with the one from open, and
 * has `esb.audit()` check every VMA's file and offset against the table (no hole, nothing moved).
 * Where a KVM guest can run (x86_64, usable /dev/kvm, XIVE_REMAP_NO_KVM unset), the guest reads
 * the touched interrupts too, on its very next load after each step.
 *
 * A consumer of the library like every example (it needs the stand-ins of xive-remap/native-stubs,
 * which the library itself never imports). Run: `node dist/examples/demo.js [--json] [--no-guest]`;
 * exit 0 when every check passed, 1 when one failed, 2 on a bad argument.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { EsbController, esbOffset } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, KvmX86Guest, expectedStamp, readStamp } from 'xive-remap/native-stubs';

/** What one step of the demo saw. */
interface DemoStep {
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
interface DemoResult {
  /** Interrupts, esbShift and the region. */
  readonly region: { nrIrqs: number; esbShift: number; userspaceAddr: string; size: string };
  /** Every step, in order. */
  readonly steps: DemoStep[];
  /** Whether every check passed. */
  readonly ok: boolean;
}

/** Something that looks at the region after each step (e.g. a KVM guest reading its pages). */
interface DemoObserver {
  /** Called once after open. */
  start(esb: EsbController): void;
  /** Look at these interrupts after a step; return a one-line report, or throw if what it saw is wrong. */
  look(esb: EsbController, irqs: number[]): string;
  /** Called at the end. */
  stop(): void;
}

/** VMAs of this process that overlap [start, end), counted in /proc/self/maps (not from the library's table). */
function vmasIn(start: bigint, end: bigint): number {
  return readFileSync('/proc/self/maps', 'latin1')
    .split('\n')
    .map((line) => /^([0-9a-f]+)-([0-9a-f]+) /.exec(line))
    .filter((m) => m !== null && BigInt(`0x${m[2]}`) > start && BigInt(`0x${m[1]}`) < end).length;
}

function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}

/** Run the demo; never throws for a failed check (see `ok`), only for a broken environment. */
function runDemo(observer?: DemoObserver): DemoResult {
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
        vmas: vmasIn(userspaceAddr, userspaceAddr + size),
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
function renderDemo(r: DemoResult, noGuest?: string): string {
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
function kvmGuestObserver(): { observer?: DemoObserver; why?: string } {
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

const USAGE = `usage: node dist/examples/demo.js [--json] [--no-guest]

  Hot-plug passthrough interrupts on fake devices and check every step by reading memory (and
  through a real KVM guest where one can run here). Exit 0: every check passed; 1: one failed.

  --json       one JSON object on stdout, nothing else
  --no-guest   do not start the KVM guest even where one could run
  -h, --help   this text
`;

function json(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x), 2);
}

/** Parse the arguments, run the demo, print it; returns the exit code. */
function main(argv: string[]): number {
  let values: { json?: boolean; 'no-guest'?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { json: { type: 'boolean' }, 'no-guest': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    // Node's message for a bad argument is one sentence; the first line is the reason.
    process.stderr.write(`demo: ${(e as Error).message.split('\n')[0]}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  // The guest's view too, where a KVM guest can run here; say why not otherwise.
  const { observer, why } = values['no-guest'] ? { observer: undefined, why: '--no-guest' } : kvmGuestObserver();
  const r = runDemo(observer);
  if (values.json) process.stdout.write(`${json({ ...r, guest: observer ? 'kvm-x86' : `none: ${why}` })}\n`);
  else process.stdout.write(`${renderDemo(r, observer ? undefined : why)}\n`);
  return r.ok ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
