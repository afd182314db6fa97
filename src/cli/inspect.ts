/**
 * `xive-remap inspect --pid N`: the ESB regions of a running VMM, read from /proc/N/maps alone,
 * rendered as a map of which interrupt ranges are overlaid by which file.
 */
import { esbGeometry, inspectMaps, timaMappings, type InspectedRegion, type TimaMapping } from '../index.js';
import { realNative } from '../internal.js';

/** What inspect found in one process. */
export interface InspectResult {
  /** The process. */
  readonly pid: number;
  /** The esbShift the interrupt numbers were computed with. */
  readonly esbShift: number;
  /** Every ESB region found (empty if none). */
  readonly regions: InspectedRegion[];
  /** Every mapping of a KVM XIVE device's TIMA (empty if none). */
  readonly tima: TimaMapping[];
}

/**
 * Read /proc/PID/maps and find the ESB regions.
 * @throws Error `no such process PID` when there is none (or it exited while being read); the
 *   file system's error for anything else (e.g. EACCES on another user's process)
 */
export function inspect(pid: number, esbShift: number): InspectResult {
  const g = esbGeometry(esbShift, realNative.pageSize);
  let maps;
  try {
    maps = realNative.readMaps(pid);
  } catch (e) {
    // ENOENT: no /proc/PID; ESRCH: it exited between open and read.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') throw new Error(`no such process ${pid}`, { cause: e });
    throw e;
  }
  return { pid, esbShift, regions: inspectMaps(maps, g.bytesPerIrq, g.hostPageSize), tima: timaMappings(maps) };
}

/** The result as text. */
export function renderInspect(r: InspectResult): string {
  if (r.regions.length === 0) return `pid ${r.pid}: no XIVE ESB region (no /memfd:fake-xive-ipi or anon_inode:kvm-xive-* ESB mapping)`;
  const lines: string[] = [];
  for (const reg of r.regions) {
    const how = reg.kernelManaged ? 'one mapping of the device (kernel-managed)' : `${reg.mappings} mapping${reg.mappings === 1 ? '' : 's'}`;
    lines.push(`pid ${r.pid}: ESB region 0x${reg.base.toString(16)}-0x${reg.end.toString(16)}, IPI pages from ${reg.ipi} (esbShift ${r.esbShift}): ${reg.nrIrqs} interrupts, ${how}`);
    for (const x of reg.ranges) {
      const irqs = x.first === x.last ? `${x.first}` : `${x.first}-${x.last}`;
      lines.push(`  ${irqs.padEnd(14)} ${x.ipi ? 'ipi' : `${x.backing} @ 0x${x.offset.toString(16)}`}`);
    }
  }
  for (const t of r.tima) lines.push(`pid ${r.pid}: TIMA 0x${t.start.toString(16)}-0x${t.end.toString(16)} (${(t.end - t.start) / 1024n} KiB) of ${t.path}`);
  return lines.join('\n');
}
