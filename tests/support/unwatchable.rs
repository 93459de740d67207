// A folder that cannot be watched, for the tests of what a watch that
// misses a folder does: the watcher's own (which `include!`s this file,
// hence no inner doc comment) and the agent's status.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Makes `root/long/…/leaf`, whose absolute path is longer than inotify
/// takes (PATH_MAX) while its path below `root` stays short enough to
/// sync: a folder that cannot be watched, even by root (unlike permission
/// bits). Made with `mkdirat`, as no path can name it. Returns the length
/// of its path below `root`.
pub fn make_unwatchable_folder(root: &Path) -> usize {
    let open = |path: &CStr, at: libc::c_int| {
        // SAFETY: a NUL-terminated path and a directory fd (or AT_FDCWD).
        let fd = unsafe { libc::openat(at, path.as_ptr(), libc::O_DIRECTORY | libc::O_RDONLY) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        fd
    };
    let root_c = CString::new(root.as_os_str().as_bytes()).unwrap();
    let mut fd = open(&root_c, libc::AT_FDCWD);
    let mut length = root.as_os_str().len();
    let mut rel = 0;
    let mut names = vec!["long".to_owned()];
    while length + 1 + 200 <= libc::PATH_MAX as usize {
        names.push("x".repeat(200));
        length += 201;
    }
    names.push("y".repeat(libc::PATH_MAX as usize - length + 10));
    for name in names {
        length += 1 + name.len();
        rel += name.len() + 1;
        let name = CString::new(name).unwrap();
        // SAFETY: as above; `fd` is ours and closed once replaced.
        unsafe {
            assert_eq!(libc::mkdirat(fd, name.as_ptr(), 0o755), 0);
            let next = open(&name, fd);
            libc::close(fd);
            fd = next;
        }
    }
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    assert!(length > libc::PATH_MAX as usize);
    rel
}
