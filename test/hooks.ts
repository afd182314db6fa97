// Mocha root hooks (.mocharc.json `require`s the compiled file): before any test runs, one line
// says why the KVM tests will skip, if they will. The tests themselves skip silently (their titles
// carry the reason), so the dot reporter shows the reason once, above the dots, not once per suite
// in the middle of them.
import { KvmX86Guest } from '../native-stubs/kvm-x86-guest.js';
import { kvmUnusable } from './kvm-fixtures.js';

/** The line printed before the tests when some KVM tests will skip here, or null when all can run. */
export function kvmSkipNotice(): string | null {
  const noKvm = kvmUnusable();
  if (noKvm !== null) return `skipping the tests that need /dev/kvm: ${noKvm}`;
  const noGuest = KvmX86Guest.usable();
  return noGuest === null ? null : `skipping the KVM x86 guest tests: ${noGuest}`;
}

/** Mocha's root hook plugin. */
export const mochaHooks = {
  beforeAll(): void {
    const notice = kvmSkipNotice();
    if (notice !== null) console.log(`  ${notice}`);
  },
};
