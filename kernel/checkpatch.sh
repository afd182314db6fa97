#!/usr/bin/env bash
# kernel/checkpatch.sh — scripts/checkpatch.pl --strict on every patch of both series (series-6.1 and
# series-upstream, cover letter aside), with the checkpatch.pl of Debian's linux-source that
# kernel/build-kvm.sh unpacked into the cache (run `npm run test:power` or build-kvm.sh once first).
#
# The checkout has no git history of Linux, so checkpatch cannot look up the commits that Fixes: tags
# name and warns "Unknown commit id" for each; those are counted apart. Exit status 1 if any patch has
# another error, warning or check.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9
CP=$(ls -d "$CACHE"/checkpatch-*/ 2>/dev/null | sort -V | tail -1)
[ -n "$CP" ] && [ -f "$CP/scripts/checkpatch.pl" ] \
  || { echo "checkpatch: no checkpatch.pl under $CACHE (run kernel/build-kvm.sh first)" >&2; exit 2; }
echo "checkpatch.pl from linux-source $(basename "$CP" | sed 's/^checkpatch-//')"
bad=0
for p in "$HERE"/series-6.1/*.patch "$HERE"/series-upstream/0[0-9][0-9][1-9]-*.patch; do
  out=$(cd "$CP" && perl scripts/checkpatch.pl --strict --no-tree --show-types "$p" 2>&1 || true)
  other=$(grep -E '^(ERROR|WARNING|CHECK):' <<<"$out" | grep -v '^WARNING:UNKNOWN_COMMIT_ID:' || true)
  unknown=$(grep -c '^WARNING:UNKNOWN_COMMIT_ID:' <<<"$out" || true)
  printf '%s/%s: %s (%s "Unknown commit id")\n' "$(basename "$(dirname "$p")")" "$(basename "$p")" \
    "$(grep -E '^total: ' <<<"$out" | tail -1)" "$unknown"
  [ -z "$other" ] || { echo "$other"; bad=1; }
done
exit "$bad"
