import { expect } from 'chai';
import { NativeError, RemapError } from 'xive-remap';
import { FaultyNative } from 'xive-remap/native-stubs';
import {
  EFD_CLOEXEC,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_PRIVATE,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  OwnedRanges,
  parseMaps,
  PROT_READ,
  PROT_WRITE,
  realNative,
} from '../src/internal.js';

describe('native layer', () => {
  it('reports the host page size from libc', () => {
    expect(realNative.pageSize).to.be.oneOf([4096, 16384, 65536]);
  });

  it('turns a failed call into a NativeError with syscall, errno and its name', () => {
    let err: unknown;
    try {
      realNative.close(-1);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(NativeError);
    expect(err).to.include({ syscall: 'close', errno: 9, code: 'EBADF' });
  });

  it('returns addresses as bigint and maps at the address it was given inside an owned range', () => {
    const len = BigInt(realNative.pageSize) * 4n;
    const addr = realNative.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n);
    expect(typeof addr).to.equal('bigint');
    realNative.claim(addr, len);
    try {
      realNative.poke(addr + 8n, Buffer.from('hello'));
      const again = realNative.mmap(addr, len / 2n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0n);
      expect(again).to.equal(addr);
      expect(realNative.peek(addr + 8n, 5).toString()).to.equal('\0\0\0\0\0');
    } finally {
      realNative.release(addr, len);
      realNative.munmap(addr, len);
    }
  });

  it('refuses MAP_FIXED outside every owned range before the kernel sees it (invariant 2)', () => {
    const len = BigInt(realNative.pageSize) * 2n;
    const addr = realNative.mmap(0n, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0n);
    realNative.poke(addr, Buffer.from('keep'));
    const before = realNative.counts.mmap ?? 0;
    try {
      let err: unknown;
      try {
        realNative.mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0n);
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(RemapError);
      expect((err as RemapError).code).to.equal('E_NOT_OWNED');
      expect(realNative.counts.mmap ?? 0).to.equal(before);
      expect(realNative.peek(addr, 4).toString()).to.equal('keep');
    } finally {
      realNative.munmap(addr, len);
    }
  });

  it('makes memfds, sizes them, writes them and reports them through fstat and fcntl', () => {
    const fd = realNative.memfdCreate('native-test', MFD_CLOEXEC);
    try {
      realNative.ftruncate(fd, 1n << 33n);
      expect(realNative.pwrite(fd, Buffer.from('x'), 5n)).to.equal(1);
      const st = realNative.fstat(fd);
      expect(st.size).to.equal(1n << 33n);
      expect(realNative.accessMode(fd)).to.equal(2);
      const dup = realNative.dupCloexec(fd);
      expect(dup).to.not.equal(fd);
      expect(realNative.fstat(dup).ino).to.equal(st.ino);
      realNative.close(dup);
    } finally {
      realNative.close(fd);
    }
  });

  it('reads and adds seals (fcntl F_GET_SEALS / F_ADD_SEALS), and the kernel enforces them', () => {
    const fd = realNative.memfdCreate('seal-test', MFD_CLOEXEC | MFD_ALLOW_SEALING);
    const born = realNative.memfdCreate('born-sealed', MFD_CLOEXEC);
    try {
      realNative.ftruncate(fd, 2n * BigInt(realNative.pageSize));
      expect(realNative.getSeals(fd)).to.equal(0);
      realNative.addSeals(fd, F_SEAL_SHRINK);
      expect(realNative.getSeals(fd)).to.equal(F_SEAL_SHRINK);
      expect(() => realNative.ftruncate(fd, 0n)).to.throw(NativeError).with.property('code', 'EPERM');
      realNative.ftruncate(fd, 4n * BigInt(realNative.pageSize)); // growing is still allowed
      // Without MFD_ALLOW_SEALING a memfd is born with F_SEAL_SEAL: no seal can be added.
      expect(realNative.getSeals(born)).to.equal(F_SEAL_SEAL);
      expect(() => realNative.addSeals(born, F_SEAL_SHRINK)).to.throw(NativeError).with.property('code', 'EPERM');
      // A file that is not shmem cannot be sealed at all.
      const plain = realNative.open('/proc/self/maps', 0);
      try {
        expect(() => realNative.getSeals(plain)).to.throw(NativeError).with.property('code', 'EINVAL');
      } finally {
        realNative.close(plain);
      }
    } finally {
      realNative.close(fd);
      realNative.close(born);
    }
  });

  it('makes an eventfd: an anonymous inode (no file type in st_mode) that cannot be mapped (ENODEV)', () => {
    const fd = realNative.eventfd(0, EFD_CLOEXEC);
    try {
      expect(realNative.fstat(fd).mode & 0o170000).to.equal(0);
      expect(() => realNative.mmap(0n, BigInt(realNative.pageSize), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n)).to.throw(NativeError).with.property('code', 'ENODEV');
    } finally {
      realNative.close(fd);
    }
  });

  it('FaultyNative can fail the new calls (getSeals, addSeals and eventfd count as fcntl, fcntl, eventfd)', () => {
    const f = new FaultyNative();
    const fd = f.memfdCreate('faulty-seals', MFD_CLOEXEC | MFD_ALLOW_SEALING);
    try {
      f.inject({ call: 'getSeals', errno: 'EBADF' }).inject({ call: 'addSeals', errno: 'EBUSY' }).inject({ call: 'eventfd', errno: 'EMFILE' });
      expect(() => f.getSeals(fd)).to.throw(NativeError).with.property('code', 'EBADF');
      expect(() => f.addSeals(fd, F_SEAL_SHRINK)).to.throw(NativeError).with.property('code', 'EBUSY');
      expect(() => f.eventfd(0, EFD_CLOEXEC)).to.throw(NativeError).with.property('code', 'EMFILE');
      expect(f.getSeals(fd)).to.equal(0); // the failed add changed nothing
      expect(f.counts).to.include({ fcntl: 3, eventfd: 1 });
    } finally {
      f.close(fd);
    }
  });

  it('passes an ioctl failure up as errno (ENOTTY on a memfd)', () => {
    const fd = realNative.memfdCreate('ioctl-test', MFD_CLOEXEC);
    try {
      expect(() => realNative.ioctl(fd, 0xae80)).to.throw(NativeError).with.property('code', 'ENOTTY');
    } finally {
      realNative.close(fd);
    }
  });
});

describe('/proc maps parsing and owned ranges', () => {
  it('parses every field of a maps line, including paths with spaces', () => {
    const [e] = parseMaps('7f0000000000-7f0000020000 rw-s 00040000 00:01 1234   /memfd:fake-xive-ipi (deleted)\n');
    expect(e).to.deep.equal({
      start: 0x7f0000000000n, end: 0x7f0000020000n, perms: 'rw-s', offset: 0x40000n, dev: '00:01', inode: 1234n, path: '/memfd:fake-xive-ipi (deleted)',
    });
  });

  const cases: [what: string, addr: bigint, len: bigint, ok: boolean][] = [
    ['the whole range', 0x1000n, 0x3000n, true],
    ['its last page', 0x3000n, 0x1000n, true],
    ['one page past the end', 0x3000n, 0x2000n, false],
    ['one page before it', 0x0n, 0x2000n, false],
    ['an empty length', 0x1000n, 0n, false],
  ];
  for (const [what, addr, len, ok] of cases) {
    it(`${ok ? 'allows' : 'refuses'} ${what}`, () => {
      const r = new OwnedRanges();
      r.claim(0x1000n, 0x3000n);
      expect(r.covers(addr, len) && len > 0n).to.equal(ok);
      if (!ok) expect(() => r.check(addr, len)).to.throw(RemapError);
    });
  }

  it('refuses to claim a range that overlaps one already owned', () => {
    const r = new OwnedRanges();
    r.claim(0x1000n, 0x3000n);
    expect(() => r.claim(0x3000n, 0x1000n)).to.throw(RemapError);
    r.release(0x1000n, 0x3000n);
    r.claim(0x3000n, 0x1000n);
  });
});
