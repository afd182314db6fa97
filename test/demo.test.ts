import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

describe('xive-remap demo (npm start)', () => {
  it('runs every hot-plug step on the fakes with every check passing, as text and as JSON', () => {
    const text = execFileSync(process.execPath, [cli, 'demo'], { encoding: 'utf8' });
    expect(text).to.match(/all checks passed\n$/);
    const r = JSON.parse(execFileSync(process.execPath, [cli, 'demo', '--json'], { encoding: 'utf8' })) as {
      ok: boolean;
      steps: { action: string; map: string[]; vmas: number; vmaBound: number; wrongStamps: string[]; memslotUnchanged: boolean; audit: string[] }[];
    };
    expect(r.ok).to.equal(true);
    expect(r.steps).to.have.length(5);
    expect(r.steps[1]?.map).to.deep.equal(['64-79←pt1:0-15']);
    expect(r.steps[4]?.map).to.deep.equal(['300←pt2:0', '310-313←pt2:4-7']);
    for (const s of r.steps) {
      expect(s.wrongStamps).to.deep.equal([]);
      expect(s.memslotUnchanged).to.equal(true);
      expect(s.audit).to.deep.equal([]);
      expect(s.vmas).to.be.at.most(s.vmaBound);
    }
  });

  const unusable = KvmX86Guest.usable();
  it(`shows the KVM guest's view of every step${unusable ? ` (skipped: ${unusable})` : ''}`, function () {
    if (unusable) this.skip();
    const r = JSON.parse(execFileSync(process.execPath, [cli, 'demo', '--json'], { encoding: 'utf8' })) as { ok: boolean; guest: string; steps: { guest?: string }[] };
    expect(r.guest).to.equal('kvm-x86');
    for (const s of r.steps) expect(s.guest).to.match(/^KVM guest read \d+ touched interrupt\(s\) on its next load, all right .*memslot registrations: 1$/);
  });

  it('exits 2 with the usage on an unknown command', () => {
    let status: number | null = null;
    try {
      execFileSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      status = (e as { status: number }).status;
    }
    expect(status).to.equal(2);
  });
});
