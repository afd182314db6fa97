#!/usr/bin/env bash
# native-stubs/power9/build-qemu-layer.sh — the QEMU layer of `npm run test:power`'s initramfs:
# what qemu-checks.mjs needs to run a real QEMU as the VMM of a KVM-HV guest inside the emulated
# POWER9. All of it is Debian 12 ppc64el, fetched through run.sh's private apt state (never installed):
#   /usr/bin/qemu-system-ppc64        qemu-system-ppc (only the binary: qemu-system-common brings
#                                     helpers and GUI libraries it does not link)
#   /{usr/,}lib/powerpc64le-linux-gnu the binary's NEEDED closure (readelf -d), minus what the base
#                                     layer already has
#   /usr/share/qemu/slof.bin          the pseries firmware (qemu-system-data)
#   /opt/qemu-l2/vmlinux              the L2 kernel: the base layer's vmlinux (the same Debian kernel)
#   /opt/qemu-l2/initrd.gz            the L2 initramfs: busybox-static, qemu-l2/init, drmgr and lsslot
#                                     (powerpc-ibm-utils, with librtas2/librtasevent2), and the modules
#                                     of L2_MODULES with their dependencies, from the kernel's package
#
# usage: build-qemu-layer.sh --apt-config FILE --base DIR [--cache DIR]
#   --apt-config  run.sh's private ppc64el apt configuration (read only: the downloads go to a
#                 scratch directory and apt's binary caches are not written)
#   --base        run.sh's base layer (manifest: the kernel package; vmlinux; base.cpio.gz)
#   --cache       default ${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9
# The layer is cached in $CACHE/qemu-<first 12 hex digits of the sha256 of the exact .deb files
# (package and version) it is made of, the kernel's package, this script and qemu-l2/init>/: new
# package versions, or a change here, build again; old ones are not removed. Prints the path of
# qemu.cpio.gz on stdout, progress on stderr.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T0=$(date +%s)
say() { printf 'qemu-layer [%4ss]: %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { printf 'qemu-layer: error: %s\n' "$*" >&2; exit 1; }

APTCONF= BASE=
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xive-remap-power9
while [ $# -gt 0 ]; do
  case "$1" in
    --apt-config) APTCONF=$2; shift 2 ;;
    --base)       BASE=$2; shift 2 ;;
    --cache)      CACHE=$2; shift 2 ;;
    *) die "unknown argument '$1' (see the comment at the top of $0)" ;;
  esac
done
[ -f "$APTCONF" ] || die "--apt-config FILE is required (run.sh's private ppc64el apt state)"
[ -f "$BASE/manifest" ] && [ -f "$BASE/vmlinux" ] && [ -f "$BASE/base.cpio.gz" ] || die "--base DIR must hold run.sh's base layer"
manifest() { sed -n "s/^$1=//p" "$BASE/manifest"; }
KPKG=$(manifest kernel_package) KVER=$(manifest kernel_version) KREL=$(manifest kernel_release)

# The L2 guest's modules: virtio-rng (the device cold-plugged on PHB 0), the hot-plugged e1000e, and
# rpaphp + rpadlpar_io, without which Linux 6.1 pseries cannot take a PCI device in (it only logs
# the hot-plug event; drmgr does the rest).
L2_MODULES=(virtio_pci virtio-rng e1000e rpaphp rpadlpar_io)
# apt with run.sh's state, writing neither its archives nor its binary caches.
papt() { APT_CONFIG=$APTCONF "$@" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=; }

# --- what the layer is made of: its cache key ---------------------------------------------------
# qemu-system-ppc's library Depends with their closure, resolved by apt against an empty dpkg status;
# the binary itself, drmgr and the kernel are fetched alone (their other Depends are for a real install).
LIBS=$(papt apt-cache show qemu-system-ppc | sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' \
  | sed 's/(.*)//; s/|.*//; s/ //g' | grep -v '^qemu-system') || die "apt knows no qemu-system-ppc"
CLOSURE=(${LIBS} qemu-system-data busybox-static librtas2 librtasevent2)
ALONE=(qemu-system-ppc powerpc-ibm-utils "$KPKG=$KVER")
uris() { # the .deb file names apt would fetch, one a line, sorted
  { papt apt-get install -d -y -qq --print-uris "${CLOSURE[@]}"; papt apt-get download --print-uris "${ALONE[@]}"; } \
    | awk '{ print $2 }' | LC_ALL=C sort
}
DEBS=$(uris) || die "apt could not resolve the QEMU layer's packages"
KEY=$( { echo "$DEBS"; cat "${BASH_SOURCE[0]}" "$HERE/qemu-l2/init"; } | sha256sum | cut -c1-12)
OUT="$CACHE/qemu-$KEY"

mkdir -p "$CACHE"
exec 7>"$CACHE/qemu-layer.lock"   # two builders of one cache take turns
flock 7
if [ -f "$OUT/qemu.cpio.gz" ] && [ -f "$OUT/manifest" ]; then
  say "cached: $OUT/qemu.cpio.gz"
  echo "$OUT/qemu.cpio.gz"
  exit 0
fi

W="$OUT.new"
rm -rf "$W"
mkdir -p "$W"/debs/partial "$W"/x "$W"/l2x "$W"/kx "$W"/layer "$W"/l2
say "downloading $(wc -l <<<"$DEBS") packages"
papt apt-get install -d -y -qq -o Dir::Cache::archives="$W/debs" "${CLOSURE[@]}" >"$W/apt.log" 2>&1 \
  || { cat "$W/apt.log" >&2; die "apt-get install -d failed"; }
(cd "$W/debs" && papt apt-get download -qq "${ALONE[@]}") >>"$W/apt.log" 2>&1 \
  || { cat "$W/apt.log" >&2; die "apt-get download failed"; }
for d in "$W"/debs/*.deb; do
  case "$(basename "$d")" in
    linux-image-*) dpkg-deb --fsys-tarfile "$d" | tar -x -C "$W/kx" ./lib/modules ;;
    busybox-static_*|powerpc-ibm-utils_*) dpkg-deb -x "$d" "$W/l2x"; dpkg-deb -x "$d" "$W/x" ;;
    *) dpkg-deb -x "$d" "$W/x" ;;
  esac
done
PKGS=$(for d in "$W"/debs/*.deb; do echo "$(dpkg-deb -f "$d" Package)=$(dpkg-deb -f "$d" Version)"; done | tr '\n' ' ')
rm -rf "$W/debs"

# --- NEEDED closure ---------------------------------------------------------------------------------
# closure TREE DEST SKIP BIN...: copies every library BIN needs, transitively, from TREE's library
# directories to the same path under DEST (symlinks resolved: the loader looks a library up by its
# NEEDED name), except those SKIP (a list of paths, or /dev/null) already has in either directory.
LIBDIRS=(lib/powerpc64le-linux-gnu usr/lib/powerpc64le-linux-gnu)
closure() {
  local tree=$1 dest=$2 skip=$3 f n d rel n_copied=0
  shift 3
  local -a todo=("$@")
  local -A seen=()
  while [ ${#todo[@]} -gt 0 ]; do
    f=${todo[-1]}
    unset 'todo[-1]'
    for n in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      [ -z "${seen[$n]:-}" ] || continue
      seen[$n]=1
      [[ "$n" == ld64.so.* ]] && continue            # the loader: base has it, L2 gets it below
      grep -qxF -e "${LIBDIRS[0]}/$n" -e "${LIBDIRS[1]}/$n" "$skip" && continue
      rel=
      for d in "${LIBDIRS[@]}"; do [ -e "$tree/$d/$n" ] && { rel=$d/$n; break; }; done
      [ -n "$rel" ] || die "library $n (NEEDED by $f) is in none of the packages"
      mkdir -p "$dest/$(dirname "$rel")"
      cp -L "$tree/$rel" "$dest/$rel"
      n_copied=$((n_copied + 1))
      todo+=("$tree/$rel")
    done
  done
  say "$(basename "$1"): $n_copied libraries"
}

# --- L2 initramfs -----------------------------------------------------------------------------------
L2="$W/l2"
mkdir -p "$L2"/bin "$L2"/sbin "$L2"/usr/bin "$L2"/usr/sbin "$L2"/etc "$L2"/lib/modules "$L2"/lib64 "$L2"/proc "$L2"/sys "$L2"/dev "$L2"/tmp
cp "$W/l2x/bin/busybox" "$L2/bin/busybox"
ln -s busybox "$L2/bin/sh"
cp "$W/l2x/usr/sbin/drmgr" "$W/l2x/usr/sbin/lsslot" "$L2/usr/sbin/"
closure "$W/x" "$L2" /dev/null "$L2/usr/sbin/drmgr" "$L2/usr/sbin/lsslot"
mkdir -p "$L2/lib/powerpc64le-linux-gnu"
cp -L "$W/x/${LIBDIRS[0]}/ld64.so.2" "$L2/${LIBDIRS[0]}/ld64.so.2"
ln -s ../lib/powerpc64le-linux-gnu/ld64.so.2 "$L2/lib64/ld64.so.2"
KD="$W/kx/lib/modules/$KREL"
[ -f "$KD/modules.dep" ] || depmod -b "$W/kx" "$KREL"
declare -a LOAD=()
add_module() { # a module (path relative to $KD) after its dependencies, once
  local m=$1 dep
  case " ${LOAD[*]:-} " in *" $m "*) return ;; esac
  for dep in $(awk -v m="$m" -F': *' '$1 == m { print $2 }' "$KD/modules.dep"); do add_module "$dep"; done
  LOAD+=("$m")
}
for m in "${L2_MODULES[@]}"; do
  p=$(awk -F: -v n="/$m.ko" '{ k = $1; sub(/\.(xz|zst|gz)$/, "", k) } substr(k, length(k) - length(n) + 1) == n { print $1; exit }' "$KD/modules.dep")
  [ -n "$p" ] || die "module $m is not in $KPKG"
  add_module "$p"
done
: > "$L2/etc/l2-modules"
for p in "${LOAD[@]}"; do
  b=$(basename "$p"); b=${b%.xz}; b=${b%.zst}; b=${b%.gz}
  case "$p" in   # busybox insmod takes a plain .ko
    *.xz) xz -dc "$KD/$p" > "$L2/lib/modules/$b" ;;
    *.zst) zstd -qdc "$KD/$p" > "$L2/lib/modules/$b" ;;
    *.gz) gzip -dc "$KD/$p" > "$L2/lib/modules/$b" ;;
    *) cp "$KD/$p" "$L2/lib/modules/$b" ;;
  esac
  echo "/lib/modules/$b" >> "$L2/etc/l2-modules"
done
say "L2 modules: $(tr '\n' ' ' < "$L2/etc/l2-modules")"
cp "$HERE/qemu-l2/init" "$L2/init"
chmod 755 "$L2/init"
mkdir -p "$W/layer/opt/qemu-l2"
(cd "$L2" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 > "$W/layer/opt/qemu-l2/initrd.gz"

# --- the layer ----------------------------------------------------------------------------------------
zcat "$BASE/base.cpio.gz" | cpio -t --quiet | sed 's#^\./##' > "$W/base-files"
mkdir -p "$W/layer/usr/bin" "$W/layer/usr/share/qemu"
cp "$W/x/usr/bin/qemu-system-ppc64" "$W/layer/usr/bin/"
closure "$W/x" "$W/layer" "$W/base-files" "$W/layer/usr/bin/qemu-system-ppc64"
cp "$W/x/usr/share/qemu/slof.bin" "$W/layer/usr/share/qemu/"
# Without .symtab/.strtab (kallsyms is separate) where a ppc64 strip is at hand: 1.3 MB less gzipped.
if command -v powerpc64le-linux-gnu-strip >/dev/null 2>&1; then
  powerpc64le-linux-gnu-strip -o "$W/layer/opt/qemu-l2/vmlinux" "$BASE/vmlinux"
else
  cp "$BASE/vmlinux" "$W/layer/opt/qemu-l2/vmlinux"
fi
cp "$W/layer/opt/qemu-l2/initrd.gz" "$W/l2-initrd.gz"   # kept beside the layer, to look into
(cd "$W/layer" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 > "$W/qemu.cpio.gz"
cat > "$W/manifest" <<EOF
key=$KEY
kernel_package=$KPKG
kernel_version=$KVER
qemu_version=$(sed -n 's/^qemu-system-ppc=//p' <<<"${PKGS// /$'\n'}")
packages=$PKGS
EOF
rm -rf "$W/x" "$W/l2x" "$W/kx" "$W/l2" "$W/layer" "$W/base-files"
rm -rf "$OUT"
mv "$W" "$OUT"
say "built $OUT/qemu.cpio.gz ($(du -h "$OUT/qemu.cpio.gz" | cut -f1), L2 initrd $(du -h "$OUT/l2-initrd.gz" | cut -f1))"
echo "$OUT/qemu.cpio.gz"
