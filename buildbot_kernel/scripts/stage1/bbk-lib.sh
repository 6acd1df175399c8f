# Shared by the stage-1 init and the stage-2 script (busybox sh; sourced, not run).
#
# Protocol (docs/farm-protocol.md): POST <server>/machines/<name>/boot answers KEY=value lines; every
# failure is POSTed to <server>/machines/<name>/report as an urlencoded form (result, stage, token,
# uname, error, reason, log) and the machine goes back to polling.  Every request under
# <server>/machines/ carries the machine key (bbk.key= on the kernel command line) in the X-BBK-Key
# header, and nothing else gets it: image files may come from another server.  Nothing here trusts the download: kexec -l
# happily loads a truncated bzImage and the machine then resets without a word, so every file is checked
# against the sha256 the server announced before it is used.

BBK_TMP=${BBK_TMP:-/tmp/bbk}
BBK_HTTP_TIMEOUT=${BBK_HTTP_TIMEOUT:-30}     # a small request (instructions, report)
BBK_DL_TIMEOUT=${BBK_DL_TIMEOUT:-900}        # one image file
BBK_STAGE=${BBK_STAGE:-1}

bbk_log() { echo "bbk-stage$BBK_STAGE: $*" >&2; }

# The exit-status rule of `git bisect run`, the same as the master's (verdict_for_exit in
# buildbot_kernel/bisect/tester.py; docs/farm-protocol.md): 0 good, 125 skip, 1-127 bad, anything else
# (above 127: killed by a signal) error, the test itself broke, which is no verdict.
bbk_verdict() {
  case $1 in
    0) echo good ;;
    125) echo skip ;;
    [1-9]|[1-9][0-9]|1[01][0-9]|12[0-7]) echo bad ;;
    *) echo error ;;
  esac
}

bbk_read_cmdline() {
  BBK_SERVER= BBK_MACHINE= BBK_KEY= BBK_IP= BBK_IFACE=eth0 BBK_ROOT= BBK_TOKEN= BBK_STAGE=1
  set -f
  for arg in $(cat /proc/cmdline); do
    case $arg in
      bbk.server=*) BBK_SERVER=${arg#*=} ;;
      bbk.machine=*) BBK_MACHINE=${arg#*=} ;;
      bbk.key=*) BBK_KEY=${arg#*=} ;;      # the machine key ([[machine]] key_file)
      bbk.ip=*) BBK_IP=${arg#*=} ;;        # ADDRESS/PREFIX[,GATEWAY]
      bbk.iface=*) BBK_IFACE=${arg#*=} ;;
      bbk.root=*) BBK_ROOT=${arg#*=} ;;    # local root device, for installing candidate modules
      bbk.stage=*) BBK_STAGE=${arg#*=} ;;
      bbk.token=*) BBK_TOKEN=${arg#*=} ;;
    esac
  done
  set +f
  BBK_SERVER=${BBK_SERVER%/}
  mkdir -p "$BBK_TMP"
}

bbk_load_modules() {
  [ -f /etc/bbk/modules ] || return 0
  while read -r m; do
    insmod "$m" 2>/dev/null || true   # built in, already loaded, or another kernel's module: harmless
  done < /etc/bbk/modules
}

# bring up $BBK_IFACE: wait for the device and its carrier (DHCP before carrier just times out), then
# DHCP, or the static bbk.ip=
bbk_network_up() {
  ip link set lo up
  n=0
  while [ ! -e "/sys/class/net/$BBK_IFACE" ]; do
    n=$((n + 1)); [ $n -le 150 ] || { bbk_log "no network device $BBK_IFACE"; return 1; }
    usleep 200000
  done
  ip link set "$BBK_IFACE" up
  n=0
  while [ "$(cat "/sys/class/net/$BBK_IFACE/carrier" 2>/dev/null)" != 1 ]; do
    n=$((n + 1)); [ $n -le 150 ] || { bbk_log "no carrier on $BBK_IFACE"; return 1; }
    usleep 200000
  done
  if [ -n "$BBK_IP" ]; then
    ip addr flush dev "$BBK_IFACE"
    ip addr add "${BBK_IP%%,*}" dev "$BBK_IFACE" || return 1
    case $BBK_IP in *,*) ip route add default via "${BBK_IP#*,}" || return 1 ;; esac
  else
    udhcpc -i "$BBK_IFACE" -s /usr/share/udhcpc/default.script -q -f -n -t 10 -T 2 >/dev/null 2>&1 || {
      bbk_log "DHCP on $BBK_IFACE failed"; return 1; }
  fi
}

# percent-encode stdin completely: no shell quoting question can arise, whatever a log contains
bbk_urlencode() { od -An -v -tx1 | tr -d ' \n' | sed 's/../%&/g'; }

# bbk_get URL FILE [TIMEOUT]; wget's message is left in $BBK_TMP/wget.err
# (busybox 1.35's `wget -T` segfaults, so the time limit is timeout(1)'s)
bbk_get() {
  rm -f "$2"
  case $1 in
    "$BBK_SERVER/machines/"*)
      timeout "${3:-$BBK_HTTP_TIMEOUT}" wget -q -O "$2" --header "X-BBK-Key: $BBK_KEY" "$1" \
        2>"$BBK_TMP/wget.err" ;;
    *) timeout "${3:-$BBK_HTTP_TIMEOUT}" wget -q -O "$2" "$1" 2>"$BBK_TMP/wget.err" ;;
  esac
}

# bbk_ask_boot FILE: ask for the boot instructions (a POST: asking is what tells the server we poll)
bbk_ask_boot() {
  rm -f "$1"
  timeout "$BBK_HTTP_TIMEOUT" wget -q -O "$1" --header "X-BBK-Key: $BBK_KEY" --post-data "stage=$BBK_STAGE" \
    "$BBK_SERVER/machines/$BBK_MACHINE/boot" 2>"$BBK_TMP/wget.err"
}

# bbk_report RESULT ERROR REASON [LOGFILE]
bbk_report() {
  body=$BBK_TMP/report.body
  {
    printf 'result=%s&stage=%s&token=%s&uname=' "$1" "$BBK_STAGE" "$BBK_TOKEN"
    uname -r | tr -d '\n' | bbk_urlencode
    printf '&error=%s&reason=' "$2"
    printf '%s' "$3" | bbk_urlencode
    if [ -n "${4:-}" ] && [ -f "$4" ]; then
      printf '&log='
      tail -c 4000 "$4" | bbk_urlencode
    fi
  } > "$body"
  n=0
  while [ $n -lt 3 ]; do
    timeout "$BBK_HTTP_TIMEOUT" wget -q -O "$BBK_TMP/report.resp" --header "X-BBK-Key: $BBK_KEY" \
      --header 'Content-Type: application/x-www-form-urlencoded' \
      --post-file "$body" "$BBK_SERVER/machines/$BBK_MACHINE/report" 2>"$BBK_TMP/wget.err" && return 0
    grep -q ' 40[0-9]' "$BBK_TMP/wget.err" && break   # refused: retrying cannot help
    n=$((n + 1)); sleep 2
  done
  bbk_log "report $1 not delivered: $(cat "$BBK_TMP/wget.err")"
  return 1
}

bbk_fail() {
  bbk_log "boot-error ($1): $2"
  bbk_report boot-error "$1" "$2"
}

bbk_parse_instructions() {
  B_NAME= B_TOKEN= B_KERNEL_URL= B_KERNEL_SHA256= B_INITRD_URL= B_INITRD_SHA256= B_MODULES_URL=
  B_MODULES_SHA256= B_CMDLINE= B_WAIT= B_REBOOT=
  while IFS= read -r line || [ -n "$line" ]; do
    key=${line%%=*}
    val=${line#*=}
    case $key in
      NAME|TOKEN|KERNEL_URL|KERNEL_SHA256|INITRD_URL|INITRD_SHA256|MODULES_URL|MODULES_SHA256|CMDLINE|WAIT|REBOOT)
        eval "B_$key=\$val" ;;
    esac
  done < "$1"
}

# bbk_fetch URL SHA256 OUT LABEL: download and verify, or report why not
bbk_fetch() {
  if ! bbk_get "$1" "$3" "$BBK_DL_TIMEOUT"; then
    err=$(tr '\n' ' ' < "$BBK_TMP/wget.err")
    case $err in
      *" 404"*|*" 410"*) code=download-missing ;;
      *) code=download ;;
    esac
    bbk_fail "$code" "$4 $1: ${err:-timed out after ${BBK_DL_TIMEOUT}s}"
    return 1
  fi
  got=$(sha256sum "$3" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    bbk_fail sha256 "$4 $1: sha256 $got != announced $2 ($(wc -c < "$3") bytes received)"
    return 1
  fi
}

# bbk_install_modules TARBALL INITRD: onto the local root, or (a local OS that is itself an initrd, as
# in QEMU machines) appended to that initrd as one more compressed cpio archive, which the kernel unpacks
# on top of the first
bbk_install_modules() {
  if [ -n "$2" ]; then
    rm -rf "$BBK_TMP/mods" && mkdir -p "$BBK_TMP/mods"
    xz -dc "$1" | tar -x -C "$BBK_TMP/mods" 2>"$BBK_TMP/tar.err" || {
      bbk_fail modules "unpacking modules: $(cat "$BBK_TMP/tar.err")"; return 1; }
    (cd "$BBK_TMP/mods" && find . | cpio -o -H newc 2>/dev/null | gzip) >> "$2"
    rm -rf "$BBK_TMP/mods"
    return 0
  fi
  if [ "$BBK_STAGE" = 2 ]; then
    root=/
  elif [ -n "$BBK_ROOT" ]; then
    root=/mnt/root
    mkdir -p $root
    mount "$BBK_ROOT" $root 2>"$BBK_TMP/mount.err" || {
      bbk_fail modules "mount $BBK_ROOT: $(cat "$BBK_TMP/mount.err")"; return 1; }
  else
    bbk_fail modules "modules must be installed but the stage-1 command line has no bbk.root=DEVICE"
    return 1
  fi
  xz -dc "$1" | tar -x -C $root 2>"$BBK_TMP/tar.err"
  rc=$?
  [ $root = / ] || umount $root
  [ $rc = 0 ] || { bbk_fail modules "unpacking modules: $(cat "$BBK_TMP/tar.err")"; return 1; }
}

# download, verify, kexec into the assignment in B_*; returns only when something failed (reported)
bbk_boot_assignment() {
  dl=$BBK_TMP/dl
  rm -rf "$dl" && mkdir -p "$dl"
  bbk_fetch "$B_KERNEL_URL" "$B_KERNEL_SHA256" "$dl/vmlinuz" kernel || return 1
  initrd=
  if [ -n "$B_INITRD_URL" ]; then
    bbk_fetch "$B_INITRD_URL" "$B_INITRD_SHA256" "$dl/initrd" initrd || return 1
    initrd=$dl/initrd
  fi
  if [ -n "$B_MODULES_URL" ]; then
    bbk_fetch "$B_MODULES_URL" "$B_MODULES_SHA256" "$dl/modules.tar.xz" modules || return 1
    bbk_install_modules "$dl/modules.tar.xz" "$initrd" || return 1
    rm -f "$dl/modules.tar.xz"
  fi
  # the key is handed on by the machine itself: the server never writes it into instructions
  cmdline="$B_CMDLINE bbk.key=$BBK_KEY"
  if [ -n "$initrd" ]; then
    kexec -l "$dl/vmlinuz" --initrd="$initrd" --append="$cmdline" 2>"$BBK_TMP/kexec.err"
  else
    kexec -l "$dl/vmlinuz" --append="$cmdline" 2>"$BBK_TMP/kexec.err"
  fi || {
    bbk_fail kexec-load "kexec -l $B_NAME: $(tail -c 600 "$BBK_TMP/kexec.err" | tr '\n' ' ')"
    return 1
  }
  bbk_report kexec "" "kexec -e into $B_NAME"
  bbk_log "kexec into $B_NAME"
  sync
  kexec -e 2>"$BBK_TMP/kexec.err"
  bbk_fail kexec-exec "kexec -e returned: $(tail -c 600 "$BBK_TMP/kexec.err" | tr '\n' ' ')"
  return 1
}

# poll for an assignment and boot it, forever
bbk_poll_loop() {
  while :; do
    if ! bbk_ask_boot "$BBK_TMP/boot"; then
      bbk_log "no instructions from $BBK_SERVER: $(cat "$BBK_TMP/wget.err")"
      sleep 5
      continue
    fi
    bbk_parse_instructions "$BBK_TMP/boot"
    # the bisect or test that held the machine ended and it has no default kernel: back to stage 1 (the
    # firmware's default); stage 1 itself is already home
    if [ -n "$B_REBOOT" ] && [ "$BBK_STAGE" = 2 ]; then
      bbk_log "released: rebooting into stage 1"
      sync
      reboot -f
      sleep 30
    fi
    if [ -z "$B_KERNEL_URL" ]; then
      sleep "${B_WAIT:-5}"
      continue
    fi
    BBK_TOKEN=$B_TOKEN
    bbk_boot_assignment
    sleep 1
  done
}
