//! A seccomp filter for the sandboxed interpreter. Tests run as root, so capability checks do
//! not stop anything; the filter kills the process (SIGSYS) on process creation and on system
//! calls no test needs but root could abuse: signalling or tracing other processes (pidfd,
//! ptrace, process_vm_*), device nodes, mounts and namespaces, kernel modules, clocks, keys,
//! BPF, io_uring (its operations bypass seccomp), realtime scheduling.

use std::io;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K
const KILL: u32 = 0x8000_0000; // SECCOMP_RET_KILL_PROCESS
const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
const ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32; // SECCOMP_RET_ERRNO | ENOSYS
const EACCES: u32 = 0x0005_0000 | libc::EACCES as u32; // SECCOMP_RET_ERRNO | EACCES

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// System calls that end the process, on every supported architecture.
const FORBIDDEN: &[libc::c_long] = &[
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_ptrace,
    libc::SYS_kcmp,
    libc::SYS_mknodat,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_open_tree,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_reboot,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_adjtimex,
    libc::SYS_clock_adjtime,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_fanotify_init,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_setattr,
];

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "x86_64")]
const ARCH_ONLY: &[libc::c_long] =
    &[libc::SYS_fork, libc::SYS_vfork, libc::SYS_mknod, libc::SYS_iopl, libc::SYS_ioperm];
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
#[cfg(target_arch = "aarch64")]
const ARCH_ONLY: &[libc::c_long] = &[];

/// The filter program, or `None` on architectures without a syscall table here. Besides the
/// list: clone without CLONE_THREAD is killed (threads stay allowed), clone3 answers ENOSYS so
/// the C library falls back to clone, socket answers EACCES, and a foreign syscall ABI (i386
/// entry, x32) is killed.
pub(crate) fn program() -> Option<Vec<libc::sock_filter>> {
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return None;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let mut p = vec![stmt(LD_W_ABS, 4), jump(JEQ, ARCH, 1, 0), stmt(RET, KILL), stmt(LD_W_ABS, 0)];
        if cfg!(target_arch = "x86_64") {
            p.extend([jump(JGE, 0x4000_0000, 0, 1), stmt(RET, KILL)]);
        }
        for &nr in FORBIDDEN.iter().chain(ARCH_ONLY) {
            p.extend([jump(JEQ, nr as u32, 0, 1), stmt(RET, KILL)]);
        }
        p.extend([jump(JEQ, libc::SYS_clone3 as u32, 0, 1), stmt(RET, ENOSYS)]);
        // No sockets at all (Unix ones reach the host through the file system): an error, not
        // a kill, since the C library asks nscd over one before reading /etc/passwd.
        p.extend([jump(JEQ, libc::SYS_socket as u32, 0, 1), stmt(RET, EACCES)]);
        // clone: the low 32 bits of its flags (args[0], little-endian, at offset 16).
        p.extend([jump(JEQ, libc::SYS_clone as u32, 0, 3), stmt(LD_W_ABS, 16)]);
        p.extend([jump(JSET, libc::CLONE_THREAD as u32, 1, 0), stmt(RET, KILL)]);
        p.push(stmt(RET, ALLOW));
        Some(p)
    }
}

/// Installs `filter` on the calling thread (from `pre_exec`: raw syscalls only).
pub(crate) fn install(filter: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog { len: filter.len() as libc::c_ushort, filter: filter.as_ptr() as *mut _ };
    // SAFETY: `prog` points at a live, valid BPF program for the duration of the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
