// PageSource.fromFd under hostile use (issue 12, items 1 and 9): only fds whose size cannot shrink
// under the region and that can really be mapped shared read-write are accepted, and the cost of
// finding out is paid here, never at attach. Nothing here loads from a page that could SIGBUS: the
// one case that would (the reproduction) runs in a child process.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EsbController, NativeError, PageSource, esbOffset } from 'xive-remap';
import { FakePassthroughDevice, FakeXiveDevice, FaultyNative } from 'xive-remap/native-stubs';
import {
  EFD_CLOEXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  realNative,
} from '../src/internal.js';
import { KvmSystem } from '../src/kvm/index.js';
import { kvmUnusable } from './kvm-fixtures.js';
import { expectRemapError, expectStamps } from './helpers.js';

const PAGE = BigInt(realNative.pageSize);

/** A memfd of `bytes` bytes, sealable, with `seals` added (none: a plain, shrinkable memfd). */
function memfd(bytes: bigint, seals = 0, flags = MFD_CLOEXEC | MFD_ALLOW_SEALING): number {
  const fd = realNative.memfdCreate('source-test', flags);
  realNative.ftruncate(fd, bytes);
  if (seals) realNative.addSeals(fd, seals);
  return fd;
}

/** Run `fn` with `fd`, then close it (whatever happened). */
function withFd<T>(fd: number, fn: (fd: number) => T): T {
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** The mappings of `fd`'s file in this process now (by inode). */
const mappingsOf = (fd: number): number => {
  const { ino } = realNative.fstat(fd);
  return realNative.readMaps().filter((m) => m.inode === ino).length;
};

describe('PageSource.fromFd accepts only sources whose size cannot shrink under the region (issue 12, item 1)', () => {
  it('accepts a memfd sealed with F_SEAL_SHRINK; the kernel then refuses to shrink it (EPERM)', () => {
    withFd(memfd(4n * PAGE, F_SEAL_SHRINK), (fd) => {
      const src = PageSource.fromFd(fd, PAGE, 2);
      src.close();
      expect(() => realNative.ftruncate(fd, PAGE)).to.throw(NativeError).with.property('code', 'EPERM');
    });
  });

  it('refuses a memfd that is not sealed against shrinking, naming F_SEAL_SHRINK, the fd and the way out', () => {
    withFd(memfd(4n * PAGE), (fd) => {
      const err = expectRemapError(() => PageSource.fromFd(fd, 0n, 1), 'E_SOURCE');
      expect(err.message).to.match(new RegExp(`fromFd\\(${fd}\\).*F_SEAL_SHRINK.*sizeIsFixed`));
    });
    // A memfd made without MFD_ALLOW_SEALING is born sealed with F_SEAL_SEAL only: still shrinkable.
    withFd(memfd(4n * PAGE, 0, MFD_CLOEXEC), (fd) => {
      expect(expectRemapError(() => PageSource.fromFd(fd, 0n, 1), 'E_SOURCE').message).to.match(/F_SEAL_SHRINK/);
    });
  });

  it('refuses a plain regular file unless the caller takes the guarantee with { sizeIsFixed: true }', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xive-source-'));
    try {
      const path = join(dir, 'bar');
      writeFileSync(path, Buffer.alloc(Number(4n * PAGE)));
      withFd(openSync(path, 'r+'), (fd) => {
        const err = expectRemapError(() => PageSource.fromFd(fd, 0n, 1), 'E_SOURCE');
        expect(err.message).to.match(/cannot be sealed.*sizeIsFixed/);
        expect(err.cause).to.be.instanceOf(NativeError).with.property('code', 'EINVAL'); // F_GET_SEALS
        const src = PageSource.fromFd(fd, PAGE, 2, { sizeIsFixed: true });
        expect(src.limit).to.equal(4n * PAGE);
        src.close();
        expectRemapError(() => PageSource.fromFd(fd, 0n, 1, { sizeIsFixed: 'yes' as unknown as boolean }), 'E_SOURCE');
      });
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('refuses options that are not an object, or whose getters throw, with E_SOURCE', () => {
    withFd(memfd(PAGE, F_SEAL_SHRINK), (fd) => {
      expect(expectRemapError(() => PageSource.fromFd(fd, 0, 1, null as unknown as object), 'E_SOURCE').message).to.match(/options null is not an object/);
      const hostile = Object.defineProperty({}, 'length', { get: () => { throw new Error('boom'); } });
      expect(expectRemapError(() => PageSource.fromFd(fd, 0, 1, hostile), 'E_SOURCE').cause).to.have.property('message', 'boom');
    });
  });

  it('accepts a character device whose size the caller gives (/dev/zero with { length })', () => {
    withFd(realNative.open('/dev/zero', 2), (fd) => {
      PageSource.fromFd(fd, 0n, 1, { length: 4n * PAGE }).close();
    });
  });

  it('the fakes seal their memfds: F_SEAL_SHRINK is set and a shrink is refused with EPERM', () => {
    const dev = FakeXiveDevice.create({ nrIrqs: 8 });
    const pt = FakePassthroughDevice.create({ nrIrqs: 4, id: 2 });
    try {
      for (const fd of [dev.fd, pt.fd]) {
        expect(realNative.getSeals(fd) & F_SEAL_SHRINK, `fd ${fd}`).to.equal(F_SEAL_SHRINK);
        expect(() => realNative.ftruncate(fd, 0n)).to.throw(NativeError).with.property('code', 'EPERM');
      }
      PageSource.fromFd(pt.fd, 0n, 4).close();
    } finally {
      dev.close();
      pt.close();
    }
  });

  it("the issue's reproduction (validated, truncated before attach, attached, loaded) is refused at fromFd instead of a SIGBUS (child process)", () => {
    const lib = new URL('../src/index.js', import.meta.url).href;
    const stubs = new URL('../native-stubs/index.js', import.meta.url).href;
    const internal = new URL('../src/internal.js', import.meta.url).href;
    const script = `
      import { EsbController, PageSource } from '${lib}';
      import { FakeXiveDevice, readStamp } from '${stubs}';
      import { realNative, MFD_CLOEXEC } from '${internal}';
      const dev = FakeXiveDevice.create({ nrIrqs: 16 });
      const esb = EsbController.open(dev);
      const bpi = esb.geometry.bytesPerIrq;
      const fd = realNative.memfdCreate('shrinks', MFD_CLOEXEC);
      realNative.ftruncate(fd, 4n * bpi);
      realNative.pwrite(fd, Buffer.from('mf:0:0\\0'), 0n);
      let src;
      try {
        src = PageSource.fromFd(fd, 0n, 1);
      } catch (e) {
        console.log('refused ' + e.code + ': ' + e.message);
        process.exit(0);
      }
      realNative.ftruncate(fd, 0n);
      esb.attach(3, src);
      console.log('attached');
      console.log(readStamp(esb, 3));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.signal, `child died: ${r.stdout}${r.stderr}`).to.equal(null);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.match(/^refused E_SOURCE: .*F_SEAL_SHRINK/);
  });
});

describe('PageSource.fromFd refuses fds that cannot be mapped, before any attach (issue 12, item 9)', () => {
  it('refuses an eventfd, even with { length }: the trial mmap fails with ENODEV, the errno error as cause', () => {
    withFd(realNative.eventfd(0, EFD_CLOEXEC), (fd) => {
      const err = expectRemapError(() => PageSource.fromFd(fd, 0n, 1, { length: 1n << 20n }), 'E_SOURCE');
      expect(err.message).to.match(new RegExp(`fromFd\\(${fd}\\).*trial mmap`));
      expect(err.cause).to.be.instanceOf(NativeError).with.property('code', 'ENODEV');
    });
  });

  for (const [name, seal] of [['F_SEAL_WRITE', F_SEAL_WRITE], ['F_SEAL_FUTURE_WRITE', F_SEAL_FUTURE_WRITE]] as const) {
    it(`refuses a memfd sealed with ${name}: ESB pages need a shared writable mapping`, () => {
      withFd(memfd(4n * PAGE, F_SEAL_SHRINK | seal), (fd) => {
        const err = expectRemapError(() => PageSource.fromFd(fd, 0n, 1), 'E_SOURCE');
        expect(err.message).to.match(new RegExp(`fromFd\\(${fd}\\).*${name}`));
        // Also when the caller vouches for the size: the write seal is another matter.
        expectRemapError(() => PageSource.fromFd(fd, 0n, 1, { sizeIsFixed: true }), 'E_SOURCE');
      });
    });
  }

  it('maps the first page once at a fresh address (never MAP_FIXED), unmaps it at once and never loads from it', () => {
    const f = new FaultyNative();
    withFd(memfd(8n * PAGE, F_SEAL_SHRINK), (fd) => {
      const rec = f.record(() => PageSource.fromFd(fd, 3n * PAGE, 2, { native: f }));
      if (!rec.ok) throw rec.error;
      rec.value.close();
      const mmaps = rec.calls.filter((c) => c.call === 'mmap');
      expect(mmaps.map((c) => c.fixed)).to.deep.equal([false]);
      expect(mmaps[0]?.detail).to.match(/^addr 0x0 length 0x[0-9a-f]+ fd \d+ offset 0x3/);
      expect(mmaps[0]?.detail).to.contain(`length 0x${PAGE.toString(16)} `);
      expect(rec.calls.filter((c) => c.call === 'munmap')).to.have.length(1);
      expect(rec.calls[rec.calls.length - 1]?.call).to.equal('munmap');
      expect(mappingsOf(fd)).to.equal(0);
    });
  });

  it('accepts a KVM device fd (an anonymous inode, fixed size): a vCPU fd with { length }', function () {
    const why = kvmUnusable();
    if (why) this.skip();
    const kvm = KvmSystem.open();
    const vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    try {
      expect(realNative.fstat(vcpu.fd).mode & 0o170000, 'an anonymous inode has no file type bits').to.equal(0);
      PageSource.fromFd(vcpu.fd, 0n, 1, { length: PAGE }).close();
    } finally {
      vcpu.close();
      vm.close();
      kvm.close();
    }
  });

  it('keeps attach at one system call: the checks all happen in fromFd', () => {
    const f = new FaultyNative();
    const dev = FakeXiveDevice.create({ nrIrqs: 16 });
    const esb = EsbController.open(dev, { native: f });
    try {
      withFd(memfd(4n * esb.geometry.bytesPerIrq, F_SEAL_SHRINK), (fd) => {
        for (let i = 0; i < 4; i++) for (let p = 0; p < esb.geometry.pagesPerIrq; p++) realNative.pwrite(fd, Buffer.from(`mf:${i}:${p}\0`), esbOffset(esb.geometry, i, p as 0 | 1));
        const src = PageSource.fromFd(fd, esb.geometry.bytesPerIrq, 1, { name: 'mf' });
        const rec = f.record(() => esb.attach(5, src));
        src.close();
        if (!rec.ok) throw rec.error;
        expect(rec.calls.map((c) => c.call)).to.deep.equal(['mmap']);
        expectStamps(esb, new Map([[5, 'mf:1']]));
        expect(esb.detach(5)).to.equal(true);
      });
    } finally {
      esb.close();
      dev.close();
    }
  });
});
