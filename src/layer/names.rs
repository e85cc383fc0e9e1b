//! Entry names as Docker reads them: the name Go's `archive/tar` gives a header
//! (including its old-GNU prefix fallback), and the rooted lexical cleaning that
//! turns any name into an [`ImagePath`] inside the image root.
//!
//! Docker and containerd read layers with Go's `archive/tar`, which differs from the
//! `tar` crate in how it joins the 155-byte `prefix` field to the name: it also does
//! so for a `ustar\0` magic with any version, uses the shorter star prefix when the
//! block ends in `tar\0`, and for old GNU headers (`ustar  \0`, where those bytes
//! hold atime and ctime) it does so when the times do not parse as numbers (files
//! written by Go before 1.8 put a prefix there). [`header_name`] follows Go's
//! `Reader.readHeader` byte for byte; a GNU long name or a PAX `path` still wins.

use crate::layer::entry::ImagePath;
use std::io::{self, Read};

/// The name of entry `e` as Go's `archive/tar` reads it: a GNU long name or a PAX
/// `path` record when there is one, else [`header_name`] of the header block.
pub fn entry_name<R: Read>(e: &mut tar::Entry<R>) -> io::Result<Vec<u8>> {
    let full = e.path_bytes().into_owned();
    if has_pax_path(e)? {
        return Ok(full);
    }
    // Otherwise the tar crate took a name that differs from the header's own
    // from a GNU long-name entry, which Go reads up to its first NUL.
    if full != *e.header().path_bytes() {
        return Ok(c_string(&full).to_vec());
    }
    Ok(header_name(e.header().as_bytes()))
}

fn has_pax_path<R: Read>(e: &mut tar::Entry<R>) -> io::Result<bool> {
    let Some(pax) = e.pax_extensions()? else {
        return Ok(false);
    };
    for ext in pax {
        if ext?.key_bytes() == b"path" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The name a 512-byte header block holds, joined with its prefix the way Go's
/// `archive/tar` does (see the module documentation).
pub fn header_name(block: &[u8; 512]) -> Vec<u8> {
    let field = |from: usize, to: usize| block.get(from..to).unwrap_or_default();
    let name = c_string(field(0, 100));
    let (magic, version) = (field(257, 263), field(263, 265));
    let prefix = if magic == b"ustar\0" {
        if field(508, 512) == b"tar\0" {
            c_string(field(345, 476)) // star: atime and ctime follow a shorter prefix
        } else {
            c_string(field(345, 500))
        }
    } else if magic == b"ustar " && version == b" \0" {
        let unparsable = |b: &[u8]| b.first().is_some_and(|&c| c != 0) && go_numeric(b).is_none();
        let p = c_string(field(345, 500));
        let ascii = p.iter().all(|&c| c != 0 && c < 0x80);
        if (unparsable(field(345, 357)) || unparsable(field(357, 369))) && ascii {
            p
        } else {
            &[]
        }
    } else {
        &[] // v7: no prefix
    };
    if prefix.is_empty() {
        return name.to_vec();
    }
    [prefix, b"/", name].concat()
}

/// The bytes up to the first NUL.
fn c_string(b: &[u8]) -> &[u8] {
    b.iter()
        .position(|&c| c == 0)
        .map_or(b, |n| b.get(..n).unwrap_or(b))
}

/// A numeric header field as Go's `parseNumeric` reads it (base-256 when the top
/// bit is set, else octal padded with spaces and NULs); `None` where Go fails.
fn go_numeric(b: &[u8]) -> Option<i64> {
    match b.first() {
        Some(&first) if first & 0x80 != 0 => {
            let inv = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in b.iter().enumerate() {
                let c = if i == 0 { (c ^ inv) & 0x7f } else { c ^ inv };
                if x >> 56 > 0 {
                    return None;
                }
                x = x << 8 | u64::from(c);
            }
            if x >> 63 > 0 {
                return None;
            }
            let v = x as i64;
            Some(if inv == 0xff { !v } else { v })
        }
        _ => {
            let start = b.iter().position(|&c| c != b' ' && c != 0);
            let end = b.iter().rposition(|&c| c != b' ' && c != 0);
            let (Some(s), Some(e)) = (start, end) else {
                return Some(0);
            };
            let digits = c_string(b.get(s..=e).unwrap_or_default());
            if digits.is_empty() || !digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
                return None;
            }
            let mut x: u64 = 0;
            for &c in digits {
                x = x.checked_mul(8)?.checked_add(u64::from(c - b'0'))?;
            }
            Some(x as i64)
        }
    }
}

/// Cleans a name as if it were rooted: like Go's `path.Clean("/" + name)` made
/// relative again. Empty and `.` components go, `..` removes the component before
/// it and stops at the root, so the result never leaves the root, and has no
/// `.`, `..` or empty components. The root itself is the empty path.
pub fn clean_name(name: &[u8]) -> ImagePath {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &[u8], magic: &[u8; 8], prefix_area: &[u8]) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name);
        b[257..265].copy_from_slice(magic);
        b[345..345 + prefix_area.len()].copy_from_slice(prefix_area);
        b
    }

    const GNU: &[u8; 8] = b"ustar  \0";

    #[test]
    fn clean_name_is_rooted() {
        for (raw, want) in [
            ("./a//b/./c/", "a/b/c"),
            ("/etc/passwd", "etc/passwd"),
            ("./", ""),
            ("/", ""),
            (".", ""),
            ("", ""),
            ("..", ""),
            ("../x", "x"),
            ("/abs/../../x", "x"),
            ("a/../../../b", "b"),
            ("dir/sub/..", "dir"),
            ("dne/../.wh.etc", ".wh.etc"),
            ("../.wh..wh..opq", ".wh..wh..opq"),
            ("a/...", "a/..."),
        ] {
            assert_eq!(clean_name(raw.as_bytes()), want.as_bytes(), "{raw:?}");
        }
    }

    #[test]
    fn ustar_prefix_is_joined_whatever_the_version() {
        let mut b = block(b"name", b"ustar\0\0\0", b"some/dir");
        assert_eq!(header_name(&b), b"some/dir/name");
        b[263..265].copy_from_slice(b"00");
        assert_eq!(header_name(&b), b"some/dir/name");
        // star: the prefix stops before its atime field.
        let mut b = block(b"n", b"ustar\x0000", &[b'p'; 150]);
        b[508..512].copy_from_slice(b"tar\0");
        assert_eq!(header_name(&b), [&[b'p'; 131][..], b"/n"].concat());
        // v7 (no magic): no prefix.
        assert_eq!(header_name(&block(b"n", &[0; 8], b"p")), b"n");
    }

    #[test]
    fn gnu_prefix_is_read_only_when_the_times_do_not_parse() {
        // A directory name where GNU keeps atime: not a number, so it is a prefix.
        assert_eq!(header_name(&block(b"f", GNU, b"usr/lib")), b"usr/lib/f");
        let long = b"a-directory-name-longer-than-24-bytes/sub";
        assert_eq!(
            header_name(&block(b"f", GNU, long)),
            [&long[..], b"/f"].concat()
        );
        // Valid octal times (or none): a real GNU header, no prefix.
        let mut times = *b"14712345670\x0014712345671\x00";
        assert_eq!(header_name(&block(b"f", GNU, &times)), b"f");
        assert_eq!(header_name(&block(b"f", GNU, b"")), b"f");
        // A prefix that happens to be octal digits parses as a time: no prefix (as Go).
        assert_eq!(header_name(&block(b"f", GNU, b"0755")), b"f");
        // A junk ctime alone is enough; the prefix then ends at atime's NUL.
        times[12] = b'x';
        assert_eq!(header_name(&block(b"f", GNU, &times)), b"14712345670/f");
        // Not ASCII: Go drops the prefix.
        assert_eq!(header_name(&block(b"f", GNU, "dé/x".as_bytes())), b"f");
    }

    #[test]
    fn numbers_parse_like_go() {
        assert_eq!(go_numeric(b"  0755 \0"), Some(0o755));
        assert_eq!(go_numeric(b"\0\0\0"), Some(0));
        assert_eq!(go_numeric(b"12\0junk"), Some(0o12));
        assert_eq!(go_numeric(b"+12"), None);
        assert_eq!(go_numeric(b"19"), None);
        assert_eq!(go_numeric(b"usr"), None);
        assert_eq!(
            go_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
        assert_eq!(go_numeric(&[0xff; 12]), Some(-1));
        assert_eq!(
            go_numeric(&[0x81, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }
}
