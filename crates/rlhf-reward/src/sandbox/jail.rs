//! The operating-system boundary of a sandboxed process, applied between fork and exec:
//! - a user of its own (uid = gid, no supplementary groups), fresh for every process, so it owns
//!   no file on the host and cannot signal, trace or read `/proc` of anything else, the other
//!   half of its own run included;
//! - a private mount namespace in which every mount is read-only and `nosuid`, `/tmp` is a fresh
//!   size-capped tmpfs that only this user can enter (its work directory), and directories other
//!   users cannot enter (such as `/root`) are covered by an empty tmpfs, with only the Python
//!   installation put back in place, so that what a user could not see before stays unseen.
//!
//! Everything is prepared in the parent ([`FsPlan::new`]); the child only makes raw system calls
//! on that data (async-signal-safe).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;
const MOUNT_ATTR_NOSUID: u64 = 2;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A directory other users cannot enter, covered by a tmpfs, and what is put back under it.
#[derive(Clone, Debug)]
struct Cover {
    dir: CString,
    keep: Vec<Keep>,
}

/// A tree put back at its own path under a cover, and the directories to make for it.
#[derive(Clone, Debug)]
struct Keep {
    path: CString,
    make: Vec<CString>,
}

/// The mounts of one sandboxed process.
#[derive(Clone, Debug)]
pub(crate) struct FsPlan {
    covers: Vec<Cover>,
    work: CString,
    /// Filled per process: the work tmpfs's options (its owner is the process's user).
    work_options: CString,
    /// Room for the `open_tree` descriptors, so the child does not allocate.
    tree_fds: Vec<libc::c_int>,
}

/// Where the private work directory is mounted in the process's own view.
pub(crate) const WORK_DIR: &str = "/tmp";

impl FsPlan {
    /// A plan that keeps `visible` (the interpreter's installation) readable by an unprivileged
    /// user: each of its ancestors that others cannot enter is covered and the tree put back.
    pub fn new(visible: &[PathBuf]) -> io::Result<Self> {
        let mut roots: Vec<PathBuf> = Vec::new();
        for p in visible {
            let p = std::fs::canonicalize(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            if !roots.iter().any(|r| p.starts_with(r)) {
                roots.retain(|r| !r.starts_with(&p));
                roots.push(p);
            }
        }
        let mut covers: Vec<Cover> = Vec::new();
        for root in roots {
            let Some(hidden) = first_closed_ancestor(&root)? else { continue };
            let make = root
                .ancestors()
                .take_while(|a| *a != hidden)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .map(cstring)
                .collect::<io::Result<Vec<_>>>()?;
            let keep = Keep { path: cstring(&root)?, make };
            match covers.iter_mut().find(|c| c.dir.as_bytes() == hidden.as_os_str().as_bytes()) {
                Some(c) => c.keep.push(keep),
                None => covers.push(Cover { dir: cstring(&hidden)?, keep: vec![keep] }),
            }
        }
        let n = covers.iter().map(|c| c.keep.len()).sum();
        Ok(Self {
            covers,
            work: cstring(Path::new(WORK_DIR))?,
            work_options: CString::default(),
            tree_fds: vec![-1; n],
        })
    }

    /// This plan for one process: a work tmpfs of `disk_bytes` owned by `owner`.
    pub fn for_process(&self, owner: u32, disk_bytes: u64) -> Self {
        let options = format!("size={disk_bytes},nr_inodes=4096,mode=0700,uid={owner},gid={owner}");
        Self { work_options: CString::new(options).expect("no NUL in numbers"), ..self.clone() }
    }

    /// In the child, as root: a private mount namespace laid out as the module says, then the
    /// work directory as the current directory.
    pub fn apply(&mut self) -> io::Result<()> {
        // SAFETY: raw system calls on C strings and buffers owned by `self`, prepared before fork.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            let root = c"/".as_ptr();
            check(libc::mount(
                std::ptr::null(),
                root,
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            let tmpfs = c"tmpfs".as_ptr();
            let mut slot = 0;
            for cover in &self.covers {
                let first = slot;
                for keep in &cover.keep {
                    let flags = OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint;
                    let fd = libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, keep.path.as_ptr(), flags);
                    self.tree_fds[slot] = check_long(fd)? as libc::c_int;
                    slot += 1;
                }
                let options = c"mode=0755,size=1m,nr_inodes=1024".as_ptr();
                check(libc::mount(tmpfs, cover.dir.as_ptr(), tmpfs, libc::MS_NOSUID | libc::MS_NODEV, options.cast()))?;
                for (keep, &fd) in cover.keep.iter().zip(&self.tree_fds[first..slot]) {
                    for dir in &keep.make {
                        if libc::mkdir(dir.as_ptr(), 0o755) != 0 && *libc::__errno_location() != libc::EEXIST {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    let empty = c"".as_ptr();
                    let to = keep.path.as_ptr();
                    check_long(libc::syscall(
                        libc::SYS_move_mount,
                        fd,
                        empty,
                        libc::AT_FDCWD,
                        to,
                        MOVE_MOUNT_F_EMPTY_PATH,
                    ))?;
                    libc::close(fd);
                }
            }
            let options = self.work_options.as_ptr();
            check(libc::mount(tmpfs, self.work.as_ptr(), tmpfs, libc::MS_NOSUID | libc::MS_NODEV, options.cast()))?;
            let read_only = MountAttr {
                attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            set_attr(root, AT_RECURSIVE, &read_only)?;
            let writable = MountAttr { attr_set: 0, attr_clr: MOUNT_ATTR_RDONLY, propagation: 0, userns_fd: 0 };
            set_attr(self.work.as_ptr(), 0, &writable)?;
            check(libc::chdir(self.work.as_ptr()))?;
        }
        Ok(())
    }
}

/// In the child: become `uid` (gid the same) with no supplementary groups, for good.
pub(crate) fn become_user(uid: u32) -> io::Result<()> {
    // SAFETY: plain system calls.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(uid, uid, uid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    Ok(())
}

/// A fresh pair of unprivileged ids for one run (program, tests): random in a range no
/// distribution gives to its users, so no file on the host belongs to either.
pub(crate) fn fresh_users() -> (u32, u32) {
    let base = 0x4000_0000 + 2 * (super::child::random_u64() % (1 << 28)) as u32;
    (base, base + 1)
}

/// Whether the sandbox can switch users at all (it needs root).
pub(crate) fn can_switch_users() -> bool {
    // SAFETY: plain system call.
    unsafe { libc::geteuid() == 0 }
}

unsafe fn set_attr(path: *const libc::c_char, flags: libc::c_uint, attr: &MountAttr) -> io::Result<()> {
    let size = std::mem::size_of::<MountAttr>();
    check_long(libc::syscall(libc::SYS_mount_setattr, libc::AT_FDCWD, path, flags, attr as *const MountAttr, size))
        .map(|_| ())
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: NUL in path", p.display())))
}

/// The outermost directory on the way to `path` (itself excluded) that others cannot enter.
fn first_closed_ancestor(path: &Path) -> io::Result<Option<PathBuf>> {
    let mut ancestors: Vec<&Path> = path.ancestors().skip(1).collect();
    ancestors.reverse();
    for a in ancestors {
        let mode = std::fs::metadata(a).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", a.display())))?;
        if mode.permissions().mode() & 0o001 == 0 {
            return Ok(Some(a.to_path_buf()));
        }
    }
    Ok(None)
}
