# kernel/kmod-lib.sh — what kernel/build-kvm.sh and native-stubs/power9/build-vfio.sh share: building
# one module of a Debian powerpc64le kernel out of tree, from Debian's packages of that very kernel.
# Sourced, not run. The sourcing script defines say() and die(), and sets KPKG, KVER, APTCONF and
# CACHE; kmod_parse_kernel sets ABI, FLAVOUR, UPSTREAM and SERIES from them, kmod_host_tools sets
# CROSS, kmod_unpack_headers sets KDIR. Packages are fetched with `apt-get download` into $W/debs
# and unpacked with `dpkg-deb -x`; none is installed. Only the compiler comes from the host.

# apt for the target's (ppc64el) packages, and apt for the build host's own (linux-kbuild).
tapt() { if [ -n "$APTCONF" ]; then APT_CONFIG=$APTCONF "$@"; else "$@"; fi; }
hapt() { env -u APT_CONFIG "$@"; }

# kmod_parse_kernel: ABI, FLAVOUR from the package name; KVER from apt if unset; UPSTREAM, SERIES.
kmod_parse_kernel() {
  [ -n "$KPKG" ] || die "--kernel-package linux-image-<abi>-<flavour> is required"
  [[ "$KPKG" =~ ^linux-image-([0-9]+\.[0-9]+\.[0-9]+-[0-9]+)-(.+)$ ]] \
    || die "'$KPKG' is not a Debian kernel image package name (linux-image-<abi>-<flavour>)"
  ABI=${BASH_REMATCH[1]} FLAVOUR=${BASH_REMATCH[2]}
  if [ -z "$KVER" ]; then
    KVER=$(tapt apt-cache policy "$KPKG" | awk '$1 == "Candidate:" { print $2 }')
    [ -n "$KVER" ] && [ "$KVER" != "(none)" ] || die "apt knows no version of $KPKG"
  fi
  UPSTREAM=${KVER%-*}                                 # 6.1.176-1 -> 6.1.176
  SERIES=$(cut -d. -f1,2 <<<"$UPSTREAM")              # -> 6.1 (linux-source-6.1, linux-kbuild-6.1)
}

# kmod_host_tools PKG…: CROSS (the compiler prefix) and the host packages the build needs, installed
# with apt-get if missing (root only).
kmod_host_tools() {
  local cc_pkg p missing=()
  case "$(dpkg --print-architecture)" in
    ppc64el) CROSS=;                       cc_pkg=gcc-12 ;;
    *)       CROSS=powerpc64le-linux-gnu-; cc_pkg=gcc-12-powerpc64le-linux-gnu ;;
  esac
  for p in "$cc_pkg" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
      || die "host packages missing and not root with apt-get to install them: ${missing[*]}"
    say "installing host packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    hapt apt-get update -qq >/dev/null 2>&1 || say "warning: apt-get update reported errors (continuing)"
    hapt apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed: the module cannot be built without them"
  fi
  command -v "${CROSS}gcc-12" >/dev/null || die "${CROSS}gcc-12 not found (Debian's kernel headers use gcc-12)"
}

# kmod_pick_version APTWRAPPER PACKAGE: the kernel's own version if apt has it, else one of the same
# upstream version (a Debian revision apart: same sources, said in a warning), else fail.
kmod_pick_version() {
  local wrap=$1 pkg=$2 versions v
  if [ "$wrap" = hapt ] && ! hapt apt-cache madison "$pkg" 2>/dev/null | grep -q .; then
    [ "$(id -u)" = 0 ] && hapt apt-get update -qq >/dev/null 2>&1 || true
  fi
  versions=$($wrap apt-cache madison "$pkg" 2>/dev/null | awk -F' *[|] *' '{ print $2 }' | sort -u)
  if grep -qxF "$KVER" <<<"$versions"; then echo "$KVER"; return; fi
  v=$(grep -E "^${UPSTREAM//./\\.}-" <<<"$versions" | sort -V | tail -1 || true)
  if [ -n "$v" ]; then
    say "warning: no $pkg $KVER; using $v (same upstream version $UPSTREAM)"
    echo "$v"; return
  fi
  die "$pkg: no version of upstream $UPSTREAM (the kernel is $KPKG $KVER); apt has: $(tr '\n' ' ' <<<"${versions:-nothing}")"
}

# kmod_download APTWRAPPER PKG=VER…: into $W/debs.
kmod_download() {
  local wrap=$1; shift
  (cd "$W/debs" && $wrap apt-get download -qq -o APT::Sandbox::User=root "$@" >"$W/download.log" 2>&1) \
    || { cat "$W/download.log" >&2; die "apt-get download $* failed"; }
}

# kmod_unpack_headers: the headers and kbuild packages of $W/debs into $W/hdr; KDIR is the flavour's
# headers, its Makefile pointed at the common headers beside it (it names them by installed path).
kmod_unpack_headers() {
  local deb common
  for deb in "$W"/debs/linux-headers-*.deb "$W"/debs/linux-kbuild-*.deb; do dpkg-deb -x "$deb" "$W/hdr"; done
  KDIR="$W/hdr/usr/src/linux-headers-$ABI-$FLAVOUR"
  common="$W/hdr/usr/src/linux-headers-$ABI-common"
  [ -f "$KDIR/Module.symvers" ] && [ -f "$common/Makefile" ] || die "unexpected layout of the headers packages"
  sed -i "s|^include /usr/src/linux-headers-$ABI-common/Makefile|include $common/Makefile|" "$KDIR/Makefile"
  grep -qF "include $common/Makefile" "$KDIR/Makefile" || die "could not redirect $KDIR/Makefile to $common"
}

# kmod_unpack_source PATH…: those paths of linux-source-$SERIES (in $W/debs) into $W/src.
kmod_unpack_source() {
  local p paths=()
  for p in "$@"; do paths+=("linux-source-$SERIES/$p"); done
  dpkg-deb --fsys-tarfile "$W"/debs/linux-source-*.deb | tar -xO "./usr/src/linux-source-$SERIES.tar.xz" | xz -dc \
    | tar -x -C "$W/src" --strip-components=1 "${paths[@]}"
  rm -f "$W"/debs/linux-source-*.deb
}
