"""Run a command in a throwaway QEMU virtual machine: Debian 12's kernel, this machine's files.

Why: some kernel features netd uses are missing from the kernel a test machine happens to run
(the Firecracker guest kernel netd is developed on has xfrm but no IPsec ESP,
``CONFIG_INET_ESP``). Debian's own kernel has them as modules. This module boots that kernel,
unpacked from its package into a cache and never installed, in QEMU, with *this machine's*
root filesystem as the guest's, so the checkout, its ``.venv``, ``ip``, ``nft`` and ``etcd``
are all there at the same paths, and runs one command in it.

How the guest is put together (:func:`run`):

- the kernel: the dependency of Debian 12's ``linux-image-6.12-amd64`` (e.g.
  ``linux-image-6.12.118+deb12-amd64``; ``$NETD_VM_KERNEL``, or ``prepare_kernel(meta=...)``,
  names another meta-package, e.g. ``linux-image-amd64``, Debian 12's default 6.1, which the
  firewall's kernel test boots), fetched with ``apt-get download`` and unpacked with
  ``dpkg -x`` under :data:`CACHE` (``/var/cache/netd-vm``, or ``$NETD_VM_CACHE``; one kernel
  per meta-package), indexed with busybox ``depmod`` (:func:`prepare_kernel`);
- an initramfs written here (a newc cpio: :func:`build_initramfs`) holding busybox (package
  busybox-static), the few modules needed to reach the files (virtio-pci, 9p, overlayfs, in
  dependency order) and an ``/init`` script;
- ``/init`` mounts this machine's ``/``, shared by QEMU read-only over virtio-9p, as the lower
  layer of an overlayfs whose upper layer is a tmpfs (the guest writes anywhere; nothing reaches
  this machine), with fresh ``/proc``, ``/sys``, ``/dev`` and ``/run``, the kernel's
  modules bind-mounted at ``/lib/modules/<version>`` and busybox ``modprobe`` as the kernel's
  module loader (so ``esp4``, ``nf_tables``, ``vxlan``... load on demand), the output folder
  shared read-write at the same path as on this machine; then it switches root and runs the
  command in the same working directory;
- the command's output and exit status land in the output folder; the guest powers off.

The guest has no network device: its only networks are those the command makes in
namespaces inside it. It never writes to this machine except into the output folder.

Accelerator: KVM when ``/dev/kvm`` can run an ordinary kernel, else QEMU's TCG (software, a few
times slower). ``/dev/kvm`` of a machine whose KVM is PVM (module ``kvm_pvm``, as on the
Firecracker hosts netd is developed on) only runs kernels built as PVM guests: a stock Debian
kernel hangs there right after decompression, so such a /dev/kvm counts as unusable.
``$NETD_VM_ACCEL`` (``kvm`` or ``tcg``) overrides the choice.

By hand (as root, from the checkout)::

    PYTHONPATH=netns-fixtures .venv/bin/python -m netns_fixtures.vm --prepare
    PYTHONPATH=netns-fixtures .venv/bin/python -m netns_fixtures.vm -- uname -r

What it does not do: install anything on this machine, give the guest a network to the
outside, or keep anything between runs except the unpacked kernel in the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import lzma
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("NETD_VM_CACHE", "/var/cache/netd-vm"))
# A Debian 12 meta-package whose one dependency is the kernel to boot (see the docstring).
META_PACKAGE = os.environ.get("NETD_VM_KERNEL", "linux-image-6.12-amd64")
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"  # busybox-static: the initramfs has no libc
# What the initramfs loads before it can see any file: the PCI transport of virtio, 9p over
# virtio, and overlayfs. Their own dependencies come from modules.dep.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
HOSTROOT_TAG = "hostroot"
OUT_TAG = "out"


class VmError(RuntimeError):
    """The virtual machine could not be prepared or did not finish; the message says why."""


class VmUnavailable(VmError):
    """This machine cannot run the VM (no QEMU, no busybox, no kernel package): skip, not fail."""


@dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel: ``vmlinuz`` and the module tree of ``version``."""

    package: str
    version: str
    root: Path

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version


@dataclass(frozen=True)
class Result:
    """What a run left: the command's exit status and output, and how the VM went."""

    status: int
    output: str
    console: str
    seconds: float
    accel: str
    kernel: str


def _run(cmd: Sequence[str], doing: str, *, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        done = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VmUnavailable(f"{doing}: {e}") from e
    if done.returncode != 0:
        message = " ".join((done.stderr or done.stdout).split()) or f"status {done.returncode}"
        raise VmUnavailable(f"{doing}: {message}")
    return done.stdout


def kernel_package(meta: str = META_PACKAGE) -> str:
    """The versioned kernel package the meta-package ``meta`` depends on (from apt's lists)."""
    out = _run(["apt-cache", "depends", meta], f"asking apt what {meta} is")
    for line in out.splitlines():
        word = line.split()
        if len(word) == 2 and word[0] == "Depends:" and word[1].startswith("linux-image-"):
            return word[1]
    raise VmUnavailable(f"apt-cache depends {meta}: no linux-image dependency in {out!r}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (two test runs unpacking the same kernel wait)."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _meta_of(ready: Path) -> str:
    """The meta-package an unpacked kernel came from (first word of its ``.ready``)."""
    try:
        return (ready.read_text().split() or [""])[0]
    except OSError:
        return ""


def prepare_kernel(cache: Path = CACHE, meta: str = META_PACKAGE) -> Kernel:
    """The unpacked kernel of meta-package ``meta`` in ``cache``, fetched and unpacked first
    if it is not there yet.

    Never installs it: ``apt-get download`` only fetches the .deb (as apt does for any
    package, from the configured mirrors) and ``dpkg -x`` unpacks it into the cache.
    Kernels of other meta-packages stay in the cache (the ESP test boots 6.12, the firewall's
    6.1 test Debian 12's default); an older kernel of the same one is removed.
    VmUnavailable if apt cannot name or fetch it.
    """
    try:
        package = kernel_package(meta)
    except VmUnavailable:
        # No apt lists (a trimmed image): a kernel unpacked earlier for the same meta-package
        # still boots (.ready says which meta-package it came from).
        cached = sorted(
            (r for r in cache.glob("linux-image-*/.ready") if _meta_of(r) == meta),
            key=lambda r: r.stat().st_mtime,
        )
        if not cached:
            raise
        package = cached[-1].parent.name
    version = package.removeprefix("linux-image-")
    final = cache / package
    kernel = Kernel(package, version, final)
    ready = final / ".ready"
    if ready.exists():
        return kernel
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        if ready.exists():
            return kernel
        work = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=cache))
        try:
            _run(["apt-get", "download", "-q", package], f"downloading {package}", cwd=work)
            debs = sorted(work.glob(f"{package}_*.deb"))
            if not debs:
                raise VmUnavailable(f"downloading {package}: apt-get left no .deb in {work}")
            tree = work / "tree"
            _run(["dpkg", "-x", str(debs[0]), str(tree)], f"unpacking {debs[0].name}")
            _run([BUSYBOX, "depmod", "-b", str(tree), version], f"indexing modules of {version}")
            (tree / ".ready").write_text(f"{meta} {debs[0].name}\n")
            shutil.rmtree(final, ignore_errors=True)
            tree.rename(final)
            # Superseded kernels of the same meta-package (0.5-1 GB each); not another's.
            for old in cache.glob("linux-image-*/.ready"):
                if old.parent != final and _meta_of(old) == meta:
                    shutil.rmtree(old.parent, ignore_errors=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if not (kernel.vmlinuz.exists() and ready.exists()):
        raise VmUnavailable(f"unpacking {package}: no {kernel.vmlinuz}")
    return kernel


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def module_order(modules_dep: str, wanted: Sequence[str], builtin: str = "") -> list[str]:
    """The module files (paths relative to the module tree) to ``insmod`` for ``wanted``,
    each after everything it depends on, from the text of ``modules.dep``; those listed in
    ``modules.builtin`` (``builtin``) are part of the kernel and left out."""
    inside = {_module_name(p) for p in builtin.split()}
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps.get(path, []):
            visit(d)
        order.append(path)

    for name in wanted:
        if name.replace("-", "_") in inside:
            continue
        if name.replace("-", "_") not in by_name:
            raise VmError(f"module {name!r} is not in modules.dep (built into the kernel?)")
        visit(by_name[name.replace("-", "_")])
    return order


def cpio_newc(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """A newc ("070701") cpio archive, the format the kernel unpacks as initramfs.

    ``entries`` are ``(name, mode, data)``; a symlink's data is its target. Directories must
    come before what they contain.
    """
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


# The guest's /init (busybox sh). @VERSION@, @MODULES_DIR@, @OUT@ are filled in; the command
# itself is /command, run by /stage2 after the switch to the new root.
_INIT = r"""#!/bin/busybox sh
B=/bin/busybox
fail() { echo "netd-vm init: $*" >&2; $B poweroff -f; }
$B mkdir -p /proc /sys /dev /lower /upper /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for m in $($B cat /modules/order); do $B insmod "/modules/$m" || fail "insmod $m"; done
# cache=loose: the lower layer is never written by the guest; msize: fewer 9p round trips.
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 @HOSTROOT@ /lower \
  || fail "mounting the host root"
$B mount -t tmpfs -o mode=0755 upper /upper
$B mkdir -p /upper/data /upper/work
$B mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot \
  || fail "mounting the overlay"
N=/newroot
$B mount -t proc proc $N/proc
$B mount -t sysfs sysfs $N/sys
$B mount -t devtmpfs devtmpfs $N/dev
$B mkdir -p $N/dev/pts $N/dev/shm
$B mount -t devpts -o newinstance,ptmxmode=0666 devpts $N/dev/pts
$B mount -t tmpfs tmpfs $N/dev/shm
# What udev would add to a devtmpfs: /dev/stdin (nft -f -, bash), /dev/fd, the ptmx of devpts.
$B ln -sf /proc/self/fd $N/dev/fd
$B ln -sf /proc/self/fd/0 $N/dev/stdin
$B ln -sf /proc/self/fd/1 $N/dev/stdout
$B ln -sf /proc/self/fd/2 $N/dev/stderr
$B ln -sf pts/ptmx $N/dev/ptmx
# A fresh /run: the host's holds its own namespaces' mount points and daemons' sockets. /tmp
# stays the overlay's: a checkout may live there.
$B mount -t tmpfs -o mode=0755 run $N/run
$B mkdir -p $N/run/netd-vm $N/lib/modules/@VERSION@ $N@OUT@
$B cp /bin/busybox /stage2 /command $N/run/netd-vm/
$B ln -s busybox $N/run/netd-vm/modprobe
$B mount --bind $N@MODULES_DIR@ $N/lib/modules/@VERSION@ || fail "binding the modules"
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 @OUT_TAG@ $N@OUT@ \
  || fail "mounting the output folder"
echo /run/netd-vm/modprobe > /proc/sys/kernel/modprobe
$B hostname netd-vm
exec $B switch_root $N /run/netd-vm/busybox sh /run/netd-vm/stage2
"""

_STAGE2 = r"""B=/run/netd-vm/busybox
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/run/netd-vm
export HOME=/root LANG=C.UTF-8
$B ip link set lo up
cd @CWD@ || echo "netd-vm: no directory @CWD@" >>@OUT@/output.log
$B sh /run/netd-vm/command >>@OUT@/output.log 2>&1 </dev/null
echo $? >@OUT@/status.tmp
$B mv @OUT@/status.tmp @OUT@/status
$B dmesg >@OUT@/dmesg.log 2>&1
$B sync
$B poweroff -f
"""


def build_initramfs(
    kernel: Kernel, command: Sequence[str], cwd: Path, out: Path, env: Mapping[str, str]
) -> bytes:
    """The initramfs that boots ``kernel`` over this machine's files and runs ``command``."""
    order = module_order(
        (kernel.modules / "modules.dep").read_text(),
        BOOT_MODULES,
        (kernel.modules / "modules.builtin").read_text(),
    )
    subst = {
        "@VERSION@": kernel.version,
        "@MODULES_DIR@": shlex.quote(str(kernel.modules)),
        "@OUT@": shlex.quote(str(out)),
        "@CWD@": shlex.quote(str(cwd)),
        "@HOSTROOT@": HOSTROOT_TAG,
        "@OUT_TAG@": OUT_TAG,
    }

    def fill(text: str) -> bytes:
        for k, v in subst.items():
            text = text.replace(k, v)
        return text.encode()

    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    entries: list[tuple[str, int, bytes]] = [
        ("bin", 0o040755, b""),
        ("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes()),
        ("init", 0o100755, fill(_INIT)),
        ("stage2", 0o100644, fill(_STAGE2)),
        ("command", 0o100644, (exports + "exec " + shlex.join(command) + "\n").encode()),
        ("modules", 0o040755, b""),
        ("modules/order", 0o100644, "".join(f"{_module_name(p)}.ko\n" for p in order).encode()),
    ]
    entries += [(f"modules/{_module_name(p)}.ko", 0o100644, _module_bytes(kernel.modules / p))
                for p in order]  # fmt: skip
    return cpio_newc(entries)


def _module_bytes(path: Path) -> bytes:
    """A module file, uncompressed: busybox ``insmod`` passes the bytes to init_module(2)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix != ".ko":
        raise VmError(f"module {path}: cannot uncompress {path.suffix} here")
    return data


def accelerator() -> tuple[str, str]:
    """``("kvm", why)`` when ``/dev/kvm`` can run Debian's kernel, else ``("tcg", why)``."""
    forced = os.environ.get("NETD_VM_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced, f"NETD_VM_ACCEL={forced}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    if Path("/sys/module/kvm_pvm").exists():
        return "tcg", "/dev/kvm is PVM (kvm_pvm), which boots only PVM-built guest kernels"
    return "kvm", "/dev/kvm"


def missing_tools() -> str:
    """'' when QEMU and busybox-static are installed, else what is missing."""
    missing = []
    if not shutil.which(QEMU):
        missing.append("qemu-system-x86")
    if not os.access(BUSYBOX, os.X_OK):
        missing.append("busybox-static")
    if not missing:
        return ""
    return f"not installed: {', '.join(missing)} (scripts/bootstrap test installs them)"


def qemu_command(
    kernel: Kernel, initramfs: Path, out: Path, accel: str, memory_mb: int, cpus: int
) -> list[str]:
    """The QEMU command line: no network, no display, the serial console to a file."""
    if accel == "kvm":
        cpu = ["-accel", "kvm", "-cpu", "host"]
    else:  # one host thread per vCPU; "max": every feature TCG emulates (AES-NI included)
        cpu = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    share = "security_model=none,multidevs=remap"
    return [
        QEMU, *cpu, "-m", str(memory_mb), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-serial", f"file:{out / 'console.log'}", "-no-reboot",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs),
        "-append", "console=ttyS0 quiet panic=-1 rdinit=/init",
        "-virtfs", f"local,path=/,mount_tag={HOSTROOT_TAG},{share},readonly=on",
        "-virtfs", f"local,path={out},mount_tag={OUT_TAG},{share}",
    ]  # fmt: skip


def run(
    command: Sequence[str],
    *,
    out: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 480,
    memory_mb: int = 2048,
    cpus: int = 2,
    kernel: Kernel | None = None,
) -> Result:
    """Boot the VM, run ``command`` in ``cwd`` (default: this process's), power off.

    ``out`` (created, must be empty) is shared read-write with the guest at the same path: the
    command may write files there for the caller. VmUnavailable if this machine cannot run the
    VM; VmError if it ran but left no exit status (the console log is in the message).
    """
    if missing := missing_tools():
        raise VmUnavailable(missing)
    kernel = kernel or prepare_kernel()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise VmError(f"output folder {out} is not empty")
    accel, _ = accelerator()
    with tempfile.TemporaryDirectory(prefix="netd-vm-") as tmp:
        initramfs = Path(tmp) / "initramfs.cpio"
        initramfs.write_bytes(
            build_initramfs(kernel, command, (cwd or Path.cwd()).resolve(), out, env or {})
        )
        argv = qemu_command(kernel, initramfs, out, accel, memory_mb, cpus)
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            qemu_said, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # our own QEMU, by PID
            qemu_said, _ = proc.communicate()
        seconds = time.monotonic() - started
    console = _read(out / "console.log")
    status = _read(out / "status").strip()
    if not status.isdigit():
        tail = "\n".join((qemu_said + console + _read(out / "output.log")).splitlines()[-40:])
        raise VmError(
            f"the VM ({accel}, {kernel.package}) left no exit status after {seconds:.0f} s "
            f"(timeout {timeout:.0f} s); last lines:\n{tail}"
        )
    return Result(int(status), _read(out / "output.log"), console, seconds, accel, kernel.version)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def run_pytest(
    tests: Sequence[str],
    *,
    out: Path,
    cwd: Path,
    kernel: Kernel,
    before: str = "",
    timeout: float = 480,
) -> tuple[Result, dict[str, str]]:
    """Run pytest on ``tests`` (paths or node ids, relative to ``cwd``) in the VM, after the
    shell command ``before`` (its output is the caller's to put under ``out``); the run and
    each test case's outcome by name (passed, failure, error or skipped) from its JUnit
    report ({} if there is none). Prints one line saying what ran where."""
    python = shlex.quote(sys.executable)
    junit = out / "junit.xml"
    command = (
        f"{before + '; ' if before else ''}"
        f"exec {python} -m pytest -q -p no:cacheprovider -rA {shlex.join(tests)} "
        f"--junitxml={shlex.quote(str(junit))}"
    )
    result = run(["sh", "-c", command], out=out, cwd=cwd, timeout=timeout, kernel=kernel)
    summary = result.output.strip().splitlines()[-1:] or [""]
    print(f"VM ({result.accel}, kernel {result.kernel}) ran {len(tests)} target(s) in "
          f"{result.seconds:.0f} s: {summary[0]}")  # fmt: skip
    return result, (junit_outcomes(junit) if junit.exists() else {})


def junit_outcomes(junit: Path) -> dict[str, str]:
    """Each test case's outcome in a JUnit report: passed, failure, error or skipped."""
    found = {}
    for case in ET.parse(junit).iter("testcase"):
        tags = {child.tag for child in case} & {"failure", "error", "skipped"}
        found[case.get("name", "")] = min(tags) if tags else "passed"
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """``--prepare``: fetch and unpack the kernel only; ``-- COMMAND...``: run it in the VM."""
    parser = argparse.ArgumentParser(
        prog="python -m netns_fixtures.vm", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--prepare", action="store_true", help="only fetch and unpack the kernel")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temporary one)")
    parser.add_argument("--timeout", type=float, default=480)
    parser.add_argument("command", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.prepare:
            k = prepare_kernel()
            accel, why = accelerator()
            print(f"netd-vm: {k.package} unpacked in {k.root}; accelerator: {accel} ({why})")
            return 0
        if not args.command:
            parser.error("give a command after --")
        out = args.out or Path(tempfile.mkdtemp(prefix="netd-vm-out-"))
        result = run(args.command, out=out, timeout=args.timeout)
    except VmError as e:
        print(f"netd-vm: {e}", file=sys.stderr)
        return 125
    sys.stdout.write(result.output)
    print(f"netd-vm: exit status {result.status} in {result.seconds:.1f} s "
          f"({result.accel}, kernel {result.kernel}); files in {out}", file=sys.stderr)  # fmt: skip
    return result.status


if __name__ == "__main__":
    sys.exit(main())
