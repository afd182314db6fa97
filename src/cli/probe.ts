/**
 * `xive-remap probe`: what an operator checks before trusting the tool on a host. Each reading comes
 * from the kernel, nothing is assumed from the architecture: the architecture and page size, /dev/kvm
 * and its API version, the KVM capabilities the library relies on (KVM_CAP_NR_MEMSLOTS,
 * KVM_CAP_SYNC_MMU, KVM_CAP_DEVICE_CTRL, KVM_CAP_PPC_IRQ_XIVE), the XIVE device contract (probed
 * only where a XIVE device can be created: a VM and a device are created, probed without touching an
 * ESB page, and closed), and vm.max_map_count (the VMA budget overlays spend).
 *
 * Data flow: `probeHost()` gathers a `ProbeReport` (plain data, JSON-ready) → `renderProbe()` turns
 * it into text; the CLI prints one or the other. Probing never throws for what it finds missing: a
 * missing piece is a reading, with the reason as text.
 */
import { existsSync, readFileSync } from 'node:fs';
import { endianness, release } from 'node:os';
import type { DeviceContract } from '../device.js';
import { XiveKvmDevice } from '../devices/xive-kvm.js';
import { KVM_CAP, KvmSystem, kvmOptedOut } from '../kvm/index.js';
import { realNative, type NativeLayer } from '../native/index.js';
import { systemMaxMapCount } from '../vma-budget.js';

/** What `probeHost` found. Numbers are the kernel's answers; null where the question could not be asked. */
export interface ProbeReport {
  /** The architecture as Node names it (`x64`, `ppc64`, `arm64`). */
  readonly arch: string;
  /** Byte order. */
  readonly endianness: 'LE' | 'BE';
  /** The running kernel (`uname -r`). */
  readonly kernel: string;
  /** The CPU as /proc/cpuinfo names it (`model name`, or `cpu` on POWER), or null. */
  readonly cpu: string | null;
  /** The machine as /proc/cpuinfo names it on POWER (`machine`, e.g. `PowerNV QEMU powernv9`), or null. */
  readonly machine: string | null;
  /** x86: whether the CPU runs under a hypervisor (cpuinfo flag `hypervisor`), so KVM here is nested; null elsewhere. */
  readonly underHypervisor: boolean | null;
  /** Host page size in bytes (getpagesize). */
  readonly pageSize: number;
  /** The KVM device node. */
  readonly kvm: {
    /** Its path. */
    readonly path: string;
    /** Whether the node exists. */
    readonly present: boolean;
    /** Whether it could be opened and speaks KVM API 12. */
    readonly usable: boolean;
    /** KVM_GET_API_VERSION, or null. */
    readonly apiVersion: number | null;
    /** Why it is not usable, or null. */
    readonly error: string | null;
  };
  /** KVM_CHECK_EXTENSION on /dev/kvm (0: absent), or null without a usable /dev/kvm. */
  readonly caps: {
    /** KVM_CAP_NR_MEMSLOTS: memslots per VM (the region needs one). */
    readonly nrMemslots: number | null;
    /** KVM_CAP_SYNC_MMU: KVM follows host page table changes (what overlays rely on). */
    readonly syncMmu: number | null;
    /** KVM_CAP_DEVICE_CTRL: KVM_CREATE_DEVICE exists. */
    readonly deviceCtrl: number | null;
    /** KVM_CAP_PPC_IRQ_XIVE: the XIVE native device (POWER9/10 PowerNV with kvm-hv). */
    readonly ppcIrqXive: number | null;
  };
  /** The KVM XIVE device, where one can be created. */
  readonly xive: {
    /** Whether a device was created and probed. */
    readonly probed: boolean;
    /** Its contract (see DeviceContract), or null if not probed. */
    readonly contract: DeviceContract | null;
    /** The device's esbShift, or null if not probed. */
    readonly esbShift: number | null;
    /** The controller mode `auto` picks on this host, or null without a device. */
    readonly autoMode: 'overlay' | 'kernel-managed' | null;
    /** Why it was not probed, or what the probe ran into; null when it went fine. */
    readonly note: string | null;
  };
  /** vm.max_map_count (each passthrough run costs up to 2 VMAs), or null where /proc/sys cannot be read. */
  readonly maxMapCount: number | null;
  /** One sentence: what the tool can do here. */
  readonly verdict: string;
}

/** Options of `probeHost`. */
export interface ProbeOptions {
  /** Native layer (tests). */
  readonly native?: NativeLayer;
  /** The KVM device node (default /dev/kvm). */
  readonly kvmPath?: string;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The first value of `key` in /proc/cpuinfo, or null. */
function cpuinfo(text: string, key: string): string | null {
  const m = new RegExp(`^${key}\\s*: (.*)$`, 'm').exec(text);
  return m?.[1]?.trim() ?? null;
}

function readCpuinfo(): string {
  try {
    return readFileSync('/proc/cpuinfo', 'latin1');
  } catch {
    return '';
  }
}


/** Gather the readings. Never throws for what the host lacks: that is part of the report. */
export function probeHost(options: ProbeOptions = {}): ProbeReport {
  const native = options.native ?? realNative;
  const path = options.kvmPath ?? '/dev/kvm';
  const kvm = { path, present: existsSync(path), usable: false, apiVersion: null as number | null, error: null as string | null };
  const caps = { nrMemslots: null as number | null, syncMmu: null as number | null, deviceCtrl: null as number | null, ppcIrqXive: null as number | null };
  // XIVE_REMAP_NO_KVM: report this host as one without a usable /dev/kvm, and say so.
  const optedOut = kvmOptedOut();
  let sys: KvmSystem | undefined;
  if (optedOut !== null) kvm.error = optedOut;
  else try {
    sys = KvmSystem.open({ native, path });
    kvm.apiVersion = sys.apiVersion();
    kvm.usable = true;
    caps.nrMemslots = sys.checkExtension(KVM_CAP.NR_MEMSLOTS);
    caps.syncMmu = sys.checkExtension(KVM_CAP.SYNC_MMU);
    caps.deviceCtrl = sys.checkExtension(KVM_CAP.DEVICE_CTRL);
    caps.ppcIrqXive = sys.checkExtension(KVM_CAP.PPC_IRQ_XIVE);
  } catch (e) {
    kvm.error = message(e);
  } finally {
    try {
      sys?.close();
    } catch {
      /* a failed close of a read-only probe changes nothing */
    }
  }

  const xive = { probed: false, contract: null as DeviceContract | null, esbShift: null as number | null, autoMode: null as 'overlay' | 'kernel-managed' | null, note: null as string | null };
  if (native.arch !== 'ppc64') xive.note = `not probed: a KVM XIVE device needs ppc64 (this host is ${native.arch})`;
  else if (!kvm.usable) xive.note = `not probed: ${path} is not usable`;
  else if (!caps.ppcIrqXive) xive.note = 'not probed: KVM_CAP_PPC_IRQ_XIVE is 0 (no XIVE native mode: a POWER9/10 PowerNV host with kvm-hv is needed)';
  else {
    try {
      const dev = XiveKvmDevice.open({ nrIrqs: 2, native });
      try {
        xive.probed = true;
        xive.contract = dev.contract;
        xive.esbShift = dev.geometry.esbShift;
        xive.autoMode = dev.contract === 'per-irq-offsets' ? 'overlay' : 'kernel-managed';
      } finally {
        dev.close();
      }
    } catch (e) {
      xive.note = `probe failed: ${message(e)}`;
    }
  }

  const verdict = !xive.probed
    ? `no KVM XIVE device here; only the memfd stand-ins (xive-remap/native-stubs) can be used`
    : xive.contract === 'per-irq-offsets'
      ? `this kernel's XIVE device maps each interrupt at its own offset: overlay mode (approach 3) is safe; mode 'auto' picks overlay`
      : `this kernel's XIVE device is fixed-offset (upstream book3s_xive_native): an overlay would make later faults resolve to the wrong interrupt, so EsbController refuses mode 'overlay' and 'auto' picks kernel-managed`;

  const info = readCpuinfo();
  const flags = cpuinfo(info, 'flags');
  return {
    arch: native.arch,
    endianness: endianness(),
    kernel: release(),
    cpu: cpuinfo(info, 'model name') ?? cpuinfo(info, 'cpu'),
    machine: cpuinfo(info, 'machine'),
    underHypervisor: flags === null ? null : flags.split(/\s+/).includes('hypervisor'),
    pageSize: native.pageSize,
    kvm,
    caps,
    xive,
    maxMapCount: systemMaxMapCount() ?? null,
    verdict,
  };
}

function cap(v: number | null): string {
  return v === null ? 'not checked' : v > 0 ? String(v) : '0 (absent)';
}

/** The report as text, one reading per line. */
export function renderProbe(r: ProbeReport): string {
  const row = (label: string, value: string): string => `  ${label.padEnd(22)} ${value}`;
  const kvm = r.kvm.usable
    ? `${r.kvm.path}: usable, KVM API ${r.kvm.apiVersion}`
    : `${r.kvm.path}: ${r.kvm.present ? 'present but not usable' : 'absent'}${r.kvm.error ? ` (${r.kvm.error})` : ''}`;
  const contract = r.xive.probed
    ? `${r.xive.contract} (esbShift ${r.xive.esbShift}; mode 'auto' picks ${r.xive.autoMode})`
    : (r.xive.note ?? 'not probed');
  return [
    'xive-remap probe',
    row('architecture', `${r.arch} (${r.endianness === 'LE' ? 'little' : 'big'}-endian), kernel ${r.kernel}`),
    ...(r.cpu ? [row('cpu', r.cpu)] : []),
    ...(r.machine ? [row('machine', r.machine)] : []),
    ...(r.underHypervisor ? [row('hypervisor', 'this host is itself a guest: its KVM is nested')] : []),
    row('page size', `${r.pageSize} bytes`),
    row('kvm', kvm),
    row('KVM_CAP_NR_MEMSLOTS', cap(r.caps.nrMemslots)),
    row('KVM_CAP_SYNC_MMU', cap(r.caps.syncMmu)),
    row('KVM_CAP_DEVICE_CTRL', cap(r.caps.deviceCtrl)),
    row('KVM_CAP_PPC_IRQ_XIVE', cap(r.caps.ppcIrqXive)),
    row('XIVE device contract', r.xive.probed && r.xive.note ? `${contract}; ${r.xive.note}` : contract),
    row('vm.max_map_count', r.maxMapCount === null ? 'unknown' : `${r.maxMapCount} (each passthrough run costs up to 2 VMAs)`),
    `verdict: ${r.verdict}`,
  ].join('\n');
}
