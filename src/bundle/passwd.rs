//! The image config's `User` turned into numeric ids, the way runc and umoci read it
//! (moby/sys/user `GetExecUser`): `uid[:gid]` or names looked up in the image's own
//! `/etc/passwd` and `/etc/group`, read inside the tree without ever leaving it.
//!
//! Rules: `USER` is a name or a uid; a uid with no passwd entry is taken as it is, a
//! name must have one. The entry gives the gid and home. `USER:GROUP` sets the gid
//! (a name must be in `/etc/group`, a number is taken as it is); without `:GROUP` the
//! user's supplementary groups are the groups listing the user's name as a member.
//! An empty `User` is uid 0 (and root's entry, if any, gives its groups and home).
//! The first matching line wins; empty lines and `#` comments are skipped.

use crate::error::{Error, Result};
use crate::layer::fsroot::{split_last, Root};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Largest `/etc/passwd` or `/etc/group` read (real ones are a few KiB).
pub const MAX_DB: u64 = 4 << 20;
/// Symlinks followed while resolving one file inside the tree (as Linux does).
const MAX_HOPS: u32 = 40;
/// Largest id runc and moby accept.
const MAX_ID: u32 = i32::MAX as u32;

/// Who the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// From the matched passwd entry: becomes `HOME` unless the image sets it.
    pub home: Option<String>,
}

/// Resolves `spec` (the config's `User`) against the tree at `root`. Databases that
/// cannot be read (not a regular file, too large, a symlink loop) fail a name, while
/// numeric ids are then taken as they are (without home and groups).
pub fn resolve_in_tree(root: &mut Root, spec: &str) -> Result<ExecUser> {
    let read = |root: &mut Root| -> Result<_> {
        let passwd = read_in_root(root, "etc/passwd", MAX_DB)?;
        Ok((passwd, read_in_root(root, "etc/group", MAX_DB)?))
    };
    match read(root) {
        Ok((passwd, group)) => resolve(spec, passwd.as_deref(), group.as_deref()),
        Err(_) if is_numeric(spec) => resolve(spec, None, None),
        Err(e) => Err(e),
    }
}

/// `uid` or `uid:gid` in digits (or empty): needs no database.
fn is_numeric(spec: &str) -> bool {
    let mut parts = spec.splitn(2, ':');
    parts.all(|p| p.is_empty() || parse_id(p).is_some())
}

/// Resolves `spec` against the contents of passwd and group (None: the image has none).
pub fn resolve(spec: &str, passwd: Option<&[u8]>, group: Option<&[u8]>) -> Result<ExecUser> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g.split(':').next().unwrap_or_default()),
        None => (spec, ""),
    };
    let uid_num = parse_id(user_arg);
    let entry = passwd.and_then(|p| {
        passwd_entries(p).find(|e| match (user_arg, uid_num) {
            ("", _) => e.uid == 0,
            (_, Some(n)) => u64::from(e.uid) == n,
            (name, None) => e.name == name,
        })
    });
    let mut user = ExecUser::default();
    let matched = match entry {
        Some(e) => {
            user.uid = e.uid;
            user.gid = e.gid;
            user.home = Some(e.home.to_string()).filter(|h| !h.is_empty());
            Some(e.name)
        }
        None if user_arg.is_empty() => None,
        None => {
            user.uid = numeric(user_arg, uid_num, "user", "/etc/passwd")?;
            None
        }
    };
    if !group_arg.is_empty() {
        let gid_num = parse_id(group_arg);
        let found = group.and_then(|g| {
            group_entries(g).find(|e| match gid_num {
                Some(n) => u64::from(e.gid) == n,
                None => e.name == group_arg,
            })
        });
        user.gid = match found {
            Some(e) => e.gid,
            None => numeric(group_arg, gid_num, "group", "/etc/group")?,
        };
    } else if let (Some(name), Some(g)) = (matched, group) {
        user.additional_gids = group_entries(g)
            .filter(|e| e.members.split(',').any(|m| m == name))
            .map(|e| e.gid)
            .collect();
    }
    Ok(user)
}

/// A decimal id in runc's range, or None when `s` is not all digits.
fn parse_id(s: &str) -> Option<u64> {
    (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse::<u64>().ok())
        .flatten()
}

/// The id `s` names when no entry matched: a number in range, else an error.
fn numeric(s: &str, n: Option<u64>, what: &str, db: &str) -> Result<u32> {
    match n {
        Some(n) if n <= u64::from(MAX_ID) => Ok(n as u32),
        Some(_) => Err(Error::new(format!(
            "image config User: {what} id {s} is out of range (at most {MAX_ID})"
        ))
        .hint("fix the image's User (e.g. `umoci config --config.user`)")),
        None => Err(Error::new(format!(
            "image config User: no {what} {s:?} in the image's {db}"
        ))
        .hint("give the image a numeric User, or add the name to its /etc/passwd and /etc/group")),
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

/// The useful lines of a database: trimmed, neither empty nor comments, valid UTF-8.
fn lines(db: &[u8]) -> impl Iterator<Item = &str> {
    db.split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `name:pass:uid:gid:gecos:home:shell`; lines with bad ids are skipped.
fn passwd_entries(db: &[u8]) -> impl Iterator<Item = PasswdEntry<'_>> {
    lines(db).filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: id_field(f.get(2))?,
            gid: id_field(f.get(3))?,
            home: f.get(5).copied().unwrap_or_default(),
        })
    })
}

/// `name:pass:gid:member,member`; lines with a bad gid are skipped.
fn group_entries(db: &[u8]) -> impl Iterator<Item = GroupEntry<'_>> {
    lines(db).filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some(GroupEntry {
            name: f.first()?,
            gid: id_field(f.get(2))?,
            members: f.get(3).copied().unwrap_or_default(),
        })
    })
}

fn id_field(f: Option<&&str>) -> Option<u32> {
    parse_id(f?)
        .filter(|&n| n <= u64::from(MAX_ID))
        .map(|n| n as u32)
}

/// Reads regular file `path` (relative to the tree) with every symlink on the way,
/// the last one included, resolved inside the tree as if it were `/`: nothing outside
/// is ever opened. `None` if it does not exist; an error past `max` bytes or if it is
/// not a regular file.
pub fn read_in_root(root: &mut Root, path: &str, max: u64) -> Result<Option<Vec<u8>>> {
    let shown = format!("/{}", path.trim_start_matches('/'));
    let fail = |e: std::io::Error| Error::from(e).context(format!("reading the image's {shown}"));
    let Some(file) = open_in_root(root, path.as_bytes()).map_err(fail)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(
            Error::new(format!("the image's {shown} is not a regular file"))
                .hint("fix the image, or give it a numeric User"),
        );
    }
    let mut data = Vec::new();
    file.take(max + 1).read_to_end(&mut data).map_err(fail)?;
    if data.len() as u64 > max {
        return Err(
            Error::new(format!("the image's {shown} is larger than {max} bytes"))
                .hint("give the image a numeric User"),
        );
    }
    Ok(Some(data))
}

/// Opens `path` read-only inside the tree (see [`read_in_root`]); `None` if absent.
fn open_in_root(root: &mut Root, path: &[u8]) -> std::io::Result<Option<std::fs::File>> {
    let mut path = path.to_vec();
    for _ in 0..=MAX_HOPS {
        let trimmed: Vec<u8> = path.iter().copied().skip_while(|&b| b == b'/').collect();
        let (dir, name) = split_last(&trimmed);
        if name.is_empty() || name == b"." || name == b".." {
            return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
        }
        let dir_fd = match root.resolve_dir(if dir.is_empty() { b"." } else { dir }) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let c = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags =
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        // SAFETY: a valid directory fd and C string; the fd returned is ours.
        let fd = unsafe { libc::openat(dir_fd.as_raw_fd(), c.as_ptr(), flags) };
        if fd >= 0 {
            return Ok(Some(unsafe { std::fs::File::from_raw_fd(fd) }));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => return Ok(None),
            Some(libc::ELOOP) => {}
            _ => return Err(e),
        }
        let target = read_link(&dir_fd, &c)?;
        path = if target.first() == Some(&b'/') {
            target
        } else {
            [dir, b"/", &target].concat()
        };
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// `readlinkat(dir, name)` (a symlink's target is at most PATH_MAX bytes).
fn read_link(dir: &OwnedFd, name: &CString) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the buffer is as long as we say.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::fsroot::tests::TempDir;

    const PASSWD: &[u8] = b"# users\nroot:x:0:0:root:/root:/bin/sh\n\n  app:x:1000:1001::/home/app:/bin/sh  \nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nbad:x:zz:1::/:\ndup:x:1000:5::/dup:\n";
    const GROUP: &[u8] =
        b"root:x:0:\nwheel:x:10:root,app\napp:x:1001:\nnogroup:x:65534:\naudio:x:29:app\n";

    fn r(spec: &str) -> Result<ExecUser> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    fn ids(u: &ExecUser) -> (u32, u32, Vec<u32>, Option<&str>) {
        (u.uid, u.gid, u.additional_gids.clone(), u.home.as_deref())
    }

    #[test]
    fn names_and_numbers_as_runc_reads_them() {
        assert_eq!(ids(&r("").unwrap()), (0, 0, vec![10], Some("/root")));
        assert_eq!(
            ids(&r("app").unwrap()),
            (1000, 1001, vec![10, 29], Some("/home/app"))
        );
        // A number matches the first entry with that uid, groups from its name.
        assert_eq!(
            ids(&r("1000").unwrap()),
            (1000, 1001, vec![10, 29], Some("/home/app"))
        );
        assert_eq!(
            ids(&r("nobody").unwrap()),
            (65534, 65534, vec![], Some("/nonexistent"))
        );
        // Explicit group: no supplementary groups.
        assert_eq!(
            ids(&r("app:nogroup").unwrap()),
            (1000, 65534, vec![], Some("/home/app"))
        );
        assert_eq!(
            ids(&r("app:7").unwrap()),
            (1000, 7, vec![], Some("/home/app"))
        );
        // Unknown numbers are taken as they are.
        assert_eq!(ids(&r("4242").unwrap()), (4242, 0, vec![], None));
        assert_eq!(ids(&r("4242:99").unwrap()), (4242, 99, vec![], None));
        assert_eq!(ids(&r(":wheel").unwrap()), (0, 10, vec![], Some("/root")));
    }

    #[test]
    fn unknown_names_and_bad_numbers_are_errors() {
        for spec in ["ghost", "app:ghosts", "-1", "2147483648", "1:99999999999"] {
            let e = r(spec).err().unwrap_or_else(|| panic!("{spec}: accepted"));
            assert!(e.hint_text().is_some(), "{spec}: {e}");
        }
        assert!(e_msg("ghost").contains("no user \"ghost\""));
        // Without databases only numbers work.
        assert_eq!(
            ids(&resolve("5:6", None, None).unwrap()),
            (5, 6, vec![], None)
        );
        assert_eq!(ids(&resolve("", None, None).unwrap()), (0, 0, vec![], None));
        assert!(resolve("root", None, None).is_err());
    }

    fn e_msg(spec: &str) -> String {
        r(spec).err().unwrap().to_string()
    }

    #[test]
    fn reads_stay_inside_the_tree() {
        let t = TempDir::new("passwd");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(t.path().join("secret"), b"host secret").unwrap();
        std::fs::write(root.join("usr/lib/passwd"), b"in tree").unwrap();
        // Absolute and relative links resolve inside the tree; `..` stops at its root.
        std::os::unix::fs::symlink("/usr/lib/passwd", root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../secret", root.join("etc/group")).unwrap();
        let outside = t.path().join("secret");
        std::os::unix::fs::symlink(&outside, root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("etc/loop")).unwrap();
        for openat2 in [true, false] {
            let mut r = Root::open(&root).unwrap();
            r.set_use_openat2(openat2);
            let got = read_in_root(&mut r, "etc/passwd", 100).unwrap();
            assert_eq!(got.as_deref(), Some(&b"in tree"[..]));
            assert_eq!(read_in_root(&mut r, "etc/group", 100).unwrap(), None);
            assert_eq!(read_in_root(&mut r, "etc/abs", 100).unwrap(), None);
            assert_eq!(read_in_root(&mut r, "etc/none", 100).unwrap(), None);
            assert_eq!(read_in_root(&mut r, "nodir/passwd", 100).unwrap(), None);
            assert!(read_in_root(&mut r, "etc/loop", 100).is_err());
            assert!(read_in_root(&mut r, "etc/passwd", 3).is_err());
            assert!(read_in_root(&mut r, "usr/lib", 100).is_err());
        }
        // An unreadable database fails names, not numbers.
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::fs::create_dir(root.join("etc/passwd")).unwrap();
        let mut r = Root::open(&root).unwrap();
        assert_eq!(resolve_in_tree(&mut r, "5:6").unwrap().uid, 5);
        assert_eq!(resolve_in_tree(&mut r, "").unwrap().uid, 0);
        let e = resolve_in_tree(&mut r, "root").err().unwrap();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
