//! barge's block in `.git/info/exclude`: directories that hold nothing git can see but an
//! image's own repository (`usr/src/app/.git`).
//!
//! git keeps no paths with a `.git` component (barge's record does), so such a
//! directory has no tracked content, and `git status` would list it (or its
//! topmost untracked parent) as untracked, because git takes a directory with a
//! `.git` inside for a repository of its own. Excluding the directory keeps
//! `git status` clean after a pull. The block is rewritten at every pull and
//! commit; the rest of the file is the user's and is kept as it is.

use crate::layer::entry::ImagePath;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;

const BEGIN: &str =
    "# barge: directories holding only an image's own repository (rewritten by barge)";
const END: &str = "# barge: end";

/// The directory that holds the first `.git` component of `path`, if there is one
/// below the root.
pub fn nested_repo_dir(path: &[u8]) -> Option<&[u8]> {
    let mut start = 0usize;
    for comp in path.split(|&b| b == b'/') {
        if comp.eq_ignore_ascii_case(b".git") {
            return path.get(..start.checked_sub(1)?);
        }
        start += comp.len() + 1;
    }
    None
}

/// Whether directory `dir` holds an entry git would take for a repository or
/// cannot hold (`.git`, in any case).
pub fn holds_git_entry(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .as_encoded_bytes()
                .eq_ignore_ascii_case(b".git")
        })
    })
}

/// The directories in barge's block of `git_dir/info/exclude`.
pub fn read(git_dir: &Path) -> BTreeSet<ImagePath> {
    let text = fs::read(git_dir.join("info/exclude")).unwrap_or_default();
    let (_, block) = split(&text);
    block
        .iter()
        .filter_map(|line| unescape(line.strip_prefix(b"/")?.strip_suffix(b"/")?))
        .collect()
}

/// Rewrites barge's block of `git_dir/info/exclude` to hold `dirs`, keeping the rest.
pub fn write(git_dir: &Path, dirs: &BTreeSet<ImagePath>) -> io::Result<()> {
    let path = git_dir.join("info/exclude");
    let old = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let (mut text, _) = split(&old);
    if !dirs.is_empty() {
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        text.extend_from_slice(BEGIN.as_bytes());
        text.push(b'\n');
        for d in dirs.iter().filter_map(|d| escape(d)) {
            text.push(b'/');
            text.extend_from_slice(&d);
            text.extend_from_slice(b"/\n");
        }
        text.extend_from_slice(END.as_bytes());
        text.push(b'\n');
    }
    if text == old {
        return Ok(());
    }
    fs::create_dir_all(git_dir.join("info"))?;
    let tmp = git_dir.join("info/exclude.barge-tmp");
    fs::write(&tmp, &text)?;
    fs::rename(&tmp, &path)
}

/// The file's lines outside barge's block (as text) and the lines inside it.
fn split(text: &[u8]) -> (Vec<u8>, Vec<&[u8]>) {
    let mut rest = Vec::with_capacity(text.len());
    let mut block = Vec::new();
    let mut inside = false;
    for line in text.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        match (inside, bare) {
            (false, l) if l == BEGIN.as_bytes() => inside = true,
            (true, l) if l == END.as_bytes() => inside = false,
            (true, l) => block.push(l),
            (false, _) => rest.extend_from_slice(line),
        }
    }
    (rest, block)
}

/// A path as a gitignore pattern matches it literally: wildcards, backslashes and a
/// trailing space escaped. None for a name a pattern line cannot hold (a newline).
fn escape(path: &[u8]) -> Option<Vec<u8>> {
    if path.contains(&b'\n') || path.contains(&b'\r') {
        return None;
    }
    let mut out = Vec::with_capacity(path.len() + 4);
    for &b in path {
        if matches!(b, b'\\' | b'*' | b'?' | b'[' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
    if out.ends_with(b" ") {
        out.pop();
        out.extend_from_slice(b"\\ ");
    }
    Some(out)
}

fn unescape(pattern: &[u8]) -> Option<ImagePath> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut bytes = pattern.iter();
    while let Some(&b) = bytes.next() {
        out.push(if b == b'\\' { *bytes.next()? } else { b });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_repo_dir_is_the_parent_of_the_first_git_component() {
        assert_eq!(
            nested_repo_dir(b"usr/src/app/.git/HEAD"),
            Some(&b"usr/src/app"[..])
        );
        assert_eq!(nested_repo_dir(b"a/.GIT"), Some(&b"a"[..]));
        assert_eq!(nested_repo_dir(b"a/.git/x/.git/y"), Some(&b"a"[..]));
        assert_eq!(nested_repo_dir(b".git/HEAD"), None);
        assert_eq!(nested_repo_dir(b"a/.gitignore"), None);
        assert_eq!(nested_repo_dir(b"a/b.git/c"), None);
    }

    #[test]
    fn block_round_trips_and_keeps_the_users_lines() {
        let dir = crate::commit::testutil::tmpdir("git-exclude");
        fs::create_dir_all(dir.join("info")).unwrap();
        fs::write(dir.join("info/exclude"), "# user\n*.o").unwrap();
        let dirs: BTreeSet<ImagePath> = [
            b"usr/src/app".to_vec(),
            b"odd [x]*?\\dir ".to_vec(),
            b"new\nline".to_vec(),
        ]
        .into_iter()
        .collect();
        write(&dir, &dirs).unwrap();
        let text = fs::read_to_string(dir.join("info/exclude")).unwrap();
        assert!(text.starts_with("# user\n*.o\n# barge:"), "{text}");
        assert!(text.contains("\n/usr/src/app/\n"), "{text}");
        let mut want = dirs.clone();
        want.remove(b"new\nline".as_slice());
        assert_eq!(read(&dir), want);
        // git itself matches the escaped pattern literally.
        let repo = crate::commit::testutil::tmpdir("git-exclude-repo");
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(args)
                .output()
                .expect("git must be installed")
        };
        assert!(git(&["init", "-q"]).status.success());
        write(&repo.join(".git"), &want).unwrap();
        for (name, ignored) in [("odd [x]*?\\dir /f", true), ("oddx/f", false)] {
            let d = repo.join(name).parent().unwrap().to_path_buf();
            fs::create_dir_all(&d).unwrap();
            fs::write(repo.join(name), "x").unwrap();
            let out = git(&["check-ignore", "-q", "--no-index", name]);
            assert_eq!(out.status.success(), ignored, "{name}");
        }
        // An empty set removes the block and leaves the user's lines.
        write(&dir, &BTreeSet::new()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("info/exclude")).unwrap(),
            "# user\n*.o\n"
        );
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&repo).unwrap();
    }
}
