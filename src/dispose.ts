/**
 * `using` support on Node 18: `Symbol.dispose` is undefined there (Node ≥ 20 and 18.18's
 * backport define it), and TypeScript's `using` then looks up the registered symbol
 * `nodejs.dispose`. Every disposable class of the library keys its dispose method with this one
 * constant, so `using x = …` works on both.
 */

/** `Symbol.dispose`; on Node 18, where it is undefined, the registered symbol `nodejs.dispose`. */
export const disposeSymbol: typeof Symbol.dispose = (Symbol.dispose ?? Symbol.for('nodejs.dispose')) as typeof Symbol.dispose;
