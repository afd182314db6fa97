/**
 * `XIVE_REMAP_NO_KVM`: the one place that decides whether this process pretends to have no KVM.
 * With it set (to anything but an empty string or `0`), every check of whether KVM is usable — the
 * guest harnesses' `usable()`, the demo, the examples, `xive-remap probe`, the tests' fixtures —
 * answers "no" with the reason `XIVE_REMAP_NO_KVM is set`, and `KvmSystem.open` on the real native
 * layer refuses with `E_DEVICE_UNAVAILABLE`, so nothing reaches /dev/kvm by another way either. It
 * exists so that the path a host without /dev/kvm takes (most CI runners and containers) is run,
 * and kept green, on machines that have KVM.
 */

/** The environment variable that makes this process behave as on a host without a usable /dev/kvm. */
export const NO_KVM_ENV = 'XIVE_REMAP_NO_KVM';

/**
 * Null unless `XIVE_REMAP_NO_KVM` is set (non-empty and not `0`) in `env`; then the reason every
 * "is KVM usable" check gives: `XIVE_REMAP_NO_KVM is set`.
 */
export function kvmOptedOut(env: NodeJS.ProcessEnv = process.env): string | null {
  const v = env[NO_KVM_ENV];
  return v === undefined || v === '' || v === '0' ? null : `${NO_KVM_ENV} is set`;
}
