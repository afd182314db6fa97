#!/usr/bin/env bash
# kernel/build-kvm.sh — build a Debian powerpc64le kernel's kvm.ko with our XIVE series, out of tree.
#
# The KVM XIVE native device (book3s_xive_native.c) is linked into kvm.ko, so kvm.ko is the only
# module the series changes; Debian's own kvm-hv.ko loads on top of it. The module is built against
# Debian's packages of the very kernel it is for, so that its vermagic and symbol CRCs are those of
# the stock kvm.ko (both are checked before the result is kept):
#   linux-headers-<abi>-<flavour>, linux-headers-<abi>-common   the kernel's .config, Module.symvers
#   linux-source-<x.y>                                           arch/powerpc/kvm + virt/kvm sources
#   linux-kbuild-<x.y> (the build host's architecture)           fixdep, modpost, genksyms …
#   linux-image-<abi>-<flavour>                                  the stock kvm.ko / kvm-hv.ko to compare
# Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x`; none is installed.
# Only the compiler comes from the host: gcc-12-powerpc64le-linux-gnu on any other architecture
# (installed with apt-get if missing), gcc-12 on ppc64el.
#
# usage: kernel/build-kvm.sh --kernel-package linux-image-6.1.0-50-powerpc64le [options]
#   --kernel-version VER   the kernel package's Debian version (default: its candidate in apt)
#   --apt-config FILE      an apt configuration that sees the ppc64el packages (run.sh passes its
#                          private one); default: the system's apt, which is right on a ppc64el host
#   --cache DIR            default ${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9
#   --stock-modules DIR    a directory with the stock kvm.ko and kvm-hv.ko of that kernel (default:
#                          taken from the linux-image package)
#   --series DIR           the patches to apply, every *.patch in DIR in name order
#                          (default: series-6.1 beside this script, the series in its 6.1 form)
# The result is cached in $CACHE/kmod-<kernel version>-<first 12 hex digits of the sha256 of every
# patch of the series, its file names, this script and kmod-lib.sh>/ (a change to any of them builds again)
# (kvm.ko and a manifest); a cached result costs nothing. The path of kvm.ko is printed on stdout,
# progress on stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T0=$(date +%s)
say() { printf 'build-kvm [%4ss]: %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'build-kvm: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=kmod-lib.sh
. "$HERE/kmod-lib.sh"   # tapt/hapt, host tools, versions, download, headers and source unpacking

KPKG= KVER= APTCONF= STOCK= SERIES_DIR=$HERE/series-6.1
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel-package) KPKG=$2; shift 2 ;;
    --kernel-version) KVER=$2; shift 2 ;;
    --apt-config)     APTCONF=$2; shift 2 ;;
    --cache)          CACHE=$2; shift 2 ;;
    --stock-modules)  STOCK=$2; shift 2 ;;
    --series)         SERIES_DIR=$2; shift 2 ;;
    *) die "unknown argument '$1' (see the comment at the top of $0)" ;;
  esac
done


# --- what to build ------------------------------------------------------------------------------
kmod_parse_kernel
[ -d "$SERIES_DIR" ] || die "series directory $SERIES_DIR not found"
shopt -s nullglob; PATCHES=("$SERIES_DIR"/*.patch); shopt -u nullglob   # glob order = name order
[ ${#PATCHES[@]} -gt 0 ] || die "no *.patch in $SERIES_DIR"
# One line per patch, "sha256  name", in the order they are applied: the manifest keeps it.
PATCH_LIST=$(cd "$SERIES_DIR" && sha256sum -- "${PATCHES[@]##*/}")
PATCH_SHA=$(sha256sum <<<"$PATCH_LIST" | cut -d' ' -f1)
# The key covers every patch (content, name, order) and how it is built (this script).
BUILD_SHA=$(cat <(echo "$PATCH_LIST") "${BASH_SOURCE[0]}" "$HERE/kmod-lib.sh" | sha256sum | cut -d' ' -f1)
OUT="$CACHE/kmod-$KVER-${BUILD_SHA:0:12}"

mkdir -p "$CACHE"
exec 8>"$CACHE/kmod.lock"   # two builders of one cache take turns
flock 8
if [ -f "$OUT/kvm.ko" ] && [ -f "$OUT/manifest" ]; then
  say "cached: $OUT/kvm.ko ($KPKG $KVER, ${#PATCHES[@]} patches of $(basename "$SERIES_DIR"))"
  echo "$OUT/kvm.ko"
  exit 0
fi
say "building kvm.ko for $KPKG $KVER with the ${#PATCHES[@]} patches of $(basename "$SERIES_DIR") (sha256 of the list ${PATCH_SHA:0:12}…)"

# --- host tools ---------------------------------------------------------------------------------
kmod_host_tools make xz-utils zstd kmod patch

# --- versions -----------------------------------------------------------------------------------
# The headers define the module ABI (config, Module.symvers): they must be the kernel's exact version.
for p in "linux-headers-$ABI-$FLAVOUR" "linux-headers-$ABI-common"; do
  tapt apt-cache madison "$p" 2>/dev/null | awk -F' *[|] *' '{ print $2 }' | grep -qxF "$KVER" \
    || die "$p $KVER is not in apt (the mirror may have moved on: XIVE_POWER9_REFRESH=1 rebuilds run.sh's base layer with the current kernel)"
done
SRC_VER=$(kmod_pick_version tapt "linux-source-$SERIES")
KBUILD_VER=$(kmod_pick_version hapt "linux-kbuild-$SERIES")
say "linux-source-$SERIES $SRC_VER, linux-headers-$ABI-{$FLAVOUR,common} $KVER, linux-kbuild-$SERIES $KBUILD_VER ($(dpkg --print-architecture))"

# --- fetch and unpack ---------------------------------------------------------------------------
W="$CACHE/kmod-work"
rm -rf "$W" "$OUT.new"
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/debs" "$W/hdr" "$W/src" "$W/stock"
kmod_download tapt "linux-source-$SERIES=$SRC_VER" "linux-headers-$ABI-$FLAVOUR=$KVER" "linux-headers-$ABI-common=$KVER"
kmod_download hapt "linux-kbuild-$SERIES=$KBUILD_VER"
[ -n "$STOCK" ] || kmod_download tapt "$KPKG=$KVER"
say "downloaded $(du -sh "$W/debs" | cut -f1) of packages"

kmod_unpack_headers

# Only the sources kvm.ko is built from: arch/powerpc/kvm, virt/kvm (compiled as ../../../virt/kvm
# relative to the module directory), and arch/powerpc/mm/mmu_decl.h, which powerpc.c includes; the
# documentation the series patches too (so that every patch applies whole); and checkpatch.pl with
# the two files it reads.
say "unpacking arch/powerpc/kvm, virt/kvm, the XIVE device's documentation and checkpatch.pl from linux-source-$SERIES"
kmod_unpack_source arch/powerpc/kvm virt/kvm arch/powerpc/mm/mmu_decl.h Documentation/virt/kvm/devices/xive.rst \
  scripts/checkpatch.pl scripts/spelling.txt scripts/const_structs.checkpatch
# arch/powerpc/kvm/Makefile includes $(srctree)/virt/kvm/Makefile.kvm; out of tree, $(srctree) is
# the headers, which lack it: include the one beside the sources instead.
sed -i 's|^include $(srctree)/virt/kvm/Makefile.kvm$|include $(src)/../../../virt/kvm/Makefile.kvm|' \
  "$W/src/arch/powerpc/kvm/Makefile"
grep -qF 'include $(src)/../../../virt/kvm/Makefile.kvm' "$W/src/arch/powerpc/kvm/Makefile" \
  || die "arch/powerpc/kvm/Makefile does not include \$(srctree)/virt/kvm/Makefile.kvm as expected"

if [ -z "$STOCK" ]; then
  dpkg-deb --fsys-tarfile "$W/debs/${KPKG}_"*.deb \
    | tar -x -C "$W/stock" --wildcards --no-anchored --transform='s|.*/||' \
        '*/arch/powerpc/kvm/kvm.ko*' '*/arch/powerpc/kvm/kvm-hv.ko*'
  STOCK="$W/stock"
fi
for m in kvm kvm-hv; do # modinfo reads compressed modules, modprobe --dump-modversions may not
  if [ -f "$STOCK/$m.ko.xz" ]; then xz -dc "$STOCK/$m.ko.xz" > "$W/stock/$m.ko"
  elif [ -f "$STOCK/$m.ko.zst" ]; then zstd -qdc "$STOCK/$m.ko.zst" > "$W/stock/$m.ko"
  elif [ "$STOCK" != "$W/stock" ]; then cp "$STOCK/$m.ko" "$W/stock/$m.ko" || die "no $m.ko in $STOCK"
  fi
  [ -f "$W/stock/$m.ko" ] || die "no stock $m.ko found for $KPKG $KVER"
done

# --- patch and build ----------------------------------------------------------------------------
# checkpatch.pl --strict on every patch, before any is applied. The tree has no git history, so
# checkpatch cannot look up the commits that Fixes: tags name and warns "Unknown commit id" for each:
# those warnings are kept in the log and allowed; any other error, warning or check fails the build.
CHECKPATCH=()
for p in "${PATCHES[@]}"; do
  (cd "$W/src" && perl scripts/checkpatch.pl --strict --no-tree --show-types "$p") > "$W/checkpatch.log" 2>&1 || true
  total=$(grep -E '^total: ' "$W/checkpatch.log" | tail -1)
  [ -n "$total" ] || { cat "$W/checkpatch.log" >&2; die "checkpatch.pl gave no verdict on $(basename "$p")"; }
  other=$(grep -E '^(ERROR|WARNING|CHECK):' "$W/checkpatch.log" | grep -v '^WARNING:UNKNOWN_COMMIT_ID:' || true)
  [ -z "$other" ] || die "checkpatch.pl --strict on $(basename "$p"): $other"
  CHECKPATCH+=("$(basename "$p"): $total ($(grep -c '^WARNING:UNKNOWN_COMMIT_ID:' "$W/checkpatch.log" || true) of them 'Unknown commit id': no git history here)")
done
# kernel/checkpatch.sh runs the same checkpatch.pl on both series later, from this copy.
mkdir -p "$CACHE/checkpatch-$SRC_VER/scripts"
cp "$W/src/scripts/checkpatch.pl" "$W/src/scripts/spelling.txt" "$W/src/scripts/const_structs.checkpatch" \
  "$CACHE/checkpatch-$SRC_VER/scripts/"
say "checkpatch.pl --strict: $(printf '%s; ' "${CHECKPATCH[@]}")"

# Each patch is tried (--dry-run) on the tree the ones before it made, then applied: a patch that
# does not apply stops the build, named, before anything is compiled.
for p in "${PATCHES[@]}"; do
  (cd "$W/src" && patch -p1 --dry-run --batch -s < "$p" >/dev/null) \
    || die "$(basename "$p") does not apply to linux-source-$SERIES $SRC_VER (after the patches before it): $(cd "$W/src" && patch -p1 --dry-run --batch < "$p" 2>&1 | tail -3 | tr '\n' ' ')"
  (cd "$W/src" && patch -p1 --batch -s < "$p")
done
M="$W/src/arch/powerpc/kvm"
say "make M=arch/powerpc/kvm modules (ARCH=powerpc CROSS_COMPILE=${CROSS:-none})"
# In tree, ccflags-y's -Iarch/powerpc/kvm -Ivirt/kvm are relative to the source tree (the trace
# headers are found through them); out of tree they would point into the headers: give them again.
if ! make -C "$KDIR" M="$M" ARCH=powerpc CROSS_COMPILE="$CROSS" KCFLAGS="-I$M -I$W/src/virt/kvm" \
     -j"$(nproc)" modules >"$W/make.log" 2>&1; then
  tail -n 30 "$W/make.log" >&2
  die "make failed (log above)"
fi
[ -f "$M/kvm.ko" ] || die "the build made no kvm.ko"

# --- the module must be interchangeable with the stock one --------------------------------------
want=$(modinfo -F vermagic "$W/stock/kvm.ko") got=$(modinfo -F vermagic "$M/kvm.ko")
[ "$got" = "$want" ] || die "vermagic differs: built '$got', stock kvm.ko '$want'"
# modversions: every symbol the patched kvm.ko imports must carry the CRC the stock one imports,
# and every symbol stock kvm-hv.ko imports from kvm.ko the CRC the patched kvm.ko exports.
crc_mismatches() { # FILE_A FILE_B ("CRC SYMBOL" lines): symbols in both with different CRCs
  awk 'NR == FNR { a[$2] = $1; next } ($2 in a) && a[$2] != $1 { print $2 }' "$1" "$2"
}
modprobe --dump-modversions "$W/stock/kvm.ko" > "$W/stock-kvm.crc"
modprobe --dump-modversions "$M/kvm.ko" > "$W/kvm.crc"
modprobe --dump-modversions "$W/stock/kvm-hv.ko" > "$W/stock-kvm-hv.crc"
awk '$3 ~ /kvm\.ko$|arch\/powerpc\/kvm\/kvm$/ { print $1, $2 }' "$M/Module.symvers" > "$W/kvm-exports.crc"
[ -s "$W/kvm-exports.crc" ] || die "no exports of kvm.ko in $M/Module.symvers"
bad=$(crc_mismatches "$W/stock-kvm.crc" "$W/kvm.crc"; crc_mismatches "$W/stock-kvm-hv.crc" "$W/kvm-exports.crc")
[ -z "$bad" ] || die "symbol CRCs differ from the stock modules' for: $(tr '\n' ' ' <<<"$bad")"
# And as sets: the patch must neither import anything the stock kvm.ko does not (its CRC would go
# unchecked) nor lose or add an export (the headers' Module.symvers lists the stock kvm.ko's).
awk '$3 ~ /arch\/powerpc\/kvm\/kvm$/ { print $1, $2 }' "$KDIR/Module.symvers" | sort > "$W/stock-exports.crc"
[ -s "$W/stock-exports.crc" ] || die "no exports of kvm.ko in $KDIR/Module.symvers"
sort "$W/kvm-exports.crc" | cmp -s - "$W/stock-exports.crc" \
  || die "kvm.ko's exports differ from the stock module's (symbols or CRCs): $(sort "$W/kvm-exports.crc" | comm -3 - "$W/stock-exports.crc" | tr -s ' \t\n' ' ')"
extra=$(awk '{ print $2 }' "$W/kvm.crc" | sort | comm -23 - <(awk '{ print $2 }' "$W/stock-kvm.crc" | sort))
[ -z "$extra" ] || die "the patched kvm.ko imports symbols the stock one does not: $(tr '\n' ' ' <<<"$extra")"
say "vermagic '$got' and symbol CRCs match the stock kvm.ko ($(wc -l < "$W/kvm.crc") imports; $(wc -l < "$W/kvm-exports.crc") exports, the same set as the stock module's)"

mkdir -p "$OUT.new"
cp "$M/kvm.ko" "$OUT.new/kvm.ko"
cat > "$OUT.new/manifest" <<EOF
kernel_package=$KPKG
kernel_version=$KVER
linux_source=linux-source-$SERIES $SRC_VER
linux_kbuild=linux-kbuild-$SERIES $KBUILD_VER ($(dpkg --print-architecture))
compiler=$("${CROSS}gcc-12" --version | head -1)
series=$(basename "$SERIES_DIR")
series_sha256=$PATCH_SHA
$(sed 's/^/patch=/' <<<"$PATCH_LIST")
$(printf 'checkpatch=%s\n' "${CHECKPATCH[@]}")
vermagic=$got
EOF
rm -rf "$OUT"
mv "$OUT.new" "$OUT"
say "built $OUT/kvm.ko"
echo "$OUT/kvm.ko"
