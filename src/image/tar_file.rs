//! Tar files that hold images (oci-archive, docker-archive): [`TarIndex`] reads a tar's
//! member headers once (name → offset and size, links resolved inside the archive) and
//! hands out members as [`Section`]s read by offset; [`TarWriter`] builds a new tar in a
//! temporary file beside the target and renames it into place only at
//! [`TarWriter::finish`], so a failed write leaves no file and replaces none.
//!
//! Headers are walked here rather than through `tar::Archive`, so that every size is
//! bounded before anything is read into memory (GNU long names, PAX records) and member
//! data is never read at all while indexing.

use crate::error::{Context, Error, Result};
use crate::registry::source::BlobSource;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Most members an image archive may have (a layer is one to three members).
const MAX_MEMBERS: usize = 1 << 16;
/// Longest member or link name accepted.
const MAX_NAME: usize = 4096;
/// Largest PAX extended header read.
const MAX_PAX: u64 = 64 << 10;
/// Most links followed to reach a member.
const MAX_LINK_HOPS: usize = 8;
const BLOCK: u64 = 512;

/// Where a member's bytes are in the tar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u64,
    pub size: u64,
}

/// The members of a tar file, by normalized name (no leading `./`, no trailing `/`).
pub struct TarIndex {
    file: File,
    /// How messages name the archive (`docker-archive:/x.tar`).
    what: String,
    files: HashMap<String, Member>,
    /// Symbolic and hard links: name → target name (resolved, inside the archive).
    links: HashMap<String, String>,
}

/// Name and link overrides from GNU long-name entries and PAX headers, for the next member.
#[derive(Default)]
struct Pending {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
}

/// The compression a file starting with `head` has, by its magic bytes, and the
/// command that undoes it.
fn compression_of(head: &[u8]) -> Option<(&'static str, &'static str)> {
    const MAGICS: &[(&[u8], &str, &str)] = &[
        (&[0x1f, 0x8b], "gzip", "gunzip -c"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", "zstd -dc"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz", "xz -dc"),
        (b"BZh", "bzip2", "bzip2 -dc"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _, _)| head.starts_with(magic))
        .map(|&(_, kind, tool)| (kind, tool))
}

impl TarIndex {
    /// Reads the member headers of the tar file at `path`; `what` names it in errors.
    pub fn open(path: &Path, what: &str) -> Result<TarIndex> {
        let file = File::open(path).map_err(|e| {
            let missing = e.kind() == std::io::ErrorKind::NotFound;
            let e = Error::from(e).context(format!("open {what}"));
            if missing {
                e.hint("check the file's path (after the transport name)")
            } else {
                e
            }
        })?;
        let meta = file.metadata().with_context(|| format!("open {what}"))?;
        if meta.is_dir() {
            return Err(
                Error::new(format!("{what} is a directory, not an archive file"))
                    .hint("for an OCI image layout directory use oci:DIR[:REF]"),
            );
        }
        let len = meta.len();
        let mut index = TarIndex {
            file,
            what: what.to_string(),
            files: HashMap::new(),
            links: HashMap::new(),
        };
        index.scan(len).with_context(|| format!("read {what}"))?;
        Ok(index)
    }

    fn not_a_tar(&self, why: &str) -> Error {
        Error::new(format!("not a tar archive ({why})"))
            .hint(format!("check that {} is an image archive", self.what))
    }

    /// A compressed archive (`docker save | gzip` is common) is refused by name: members
    /// are read in place, so barge needs the tar itself.
    fn refuse_compressed(&self, first: &[u8]) -> Result<()> {
        let Some((kind, tool)) = compression_of(first) else {
            return Ok(());
        };
        Err(
            Error::new(format!("not a tar archive (it is {kind}-compressed)")).hint(format!(
                "decompress it first (`{tool} FILE > FILE.tar`) and give barge the .tar, not {}",
                self.what
            )),
        )
    }

    fn scan(&mut self, len: u64) -> Result<()> {
        let mut pos = 0u64;
        let mut pending = Pending::default();
        let mut members = 0usize;
        loop {
            if pos + BLOCK > len {
                return Err(if pos == 0 {
                    self.not_a_tar("the file is empty or too short")
                } else {
                    Error::new("the tar file is truncated (it ends inside a header)")
                        .hint("copy the archive again; it was cut short")
                });
            }
            let mut block = [0u8; BLOCK as usize];
            self.file.read_exact_at(&mut block, pos)?;
            if block.iter().all(|&b| b == 0) {
                return Ok(()); // end-of-archive marker
            }
            members += 1;
            if members > MAX_MEMBERS {
                return Err(Error::new(format!(
                    "more than {MAX_MEMBERS} members: not an image archive"
                )));
            }
            let header = tar::Header::from_byte_slice(&block);
            if pos == 0 {
                self.refuse_compressed(&block)?;
            }
            check_checksum(&block).map_err(|why| self.not_a_tar(why))?;
            let size = header
                .entry_size()
                .map_err(|_| self.not_a_tar("a header has an invalid size"))?;
            let data = pos + BLOCK;
            let end = data
                .checked_add(size.div_ceil(BLOCK) * BLOCK)
                .filter(|&end| end <= len)
                .ok_or_else(|| {
                    Error::new(format!(
                        "the tar file is truncated: a member of {size} bytes goes past its end"
                    ))
                    .hint("copy the archive again; it was cut short")
                })?;
            self.add(header, Member { offset: data, size }, &mut pending)?;
            pos = end;
        }
    }

    fn add(&mut self, header: &tar::Header, m: Member, pending: &mut Pending) -> Result<()> {
        use tar::EntryType as T;
        match header.entry_type() {
            T::GNULongName => pending.name = Some(self.read_name(m)?),
            T::GNULongLink => pending.link = Some(self.read_name(m)?),
            T::XHeader => self.read_pax(m, pending)?,
            T::XGlobalHeader => {}
            kind => {
                let raw_name = pending
                    .name
                    .take()
                    .unwrap_or_else(|| header.path_bytes().into_owned());
                let raw_link = pending
                    .link
                    .take()
                    .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
                let name = member_name(&raw_name)?;
                match kind {
                    T::Regular | T::Continuous => self.insert_file(name, m)?,
                    T::Symlink | T::Link => {
                        let target = raw_link.unwrap_or_default();
                        let target = link_target(&name, &target, kind == T::Symlink)?;
                        self.insert_link(name, target)?;
                    }
                    // Directories and anything else are not image content.
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn insert_file(&mut self, name: String, m: Member) -> Result<()> {
        if name.is_empty() || self.links.contains_key(&name) {
            return Err(odd_name(&name));
        }
        if self.files.insert(name.clone(), m).is_some() {
            return Err(Error::new(format!("member {name:?} appears twice"))
                .hint("the archive is not one an image tool wrote; recreate it"));
        }
        Ok(())
    }

    fn insert_link(&mut self, name: String, target: String) -> Result<()> {
        if name.is_empty() || self.files.contains_key(&name) {
            return Err(odd_name(&name));
        }
        if self.links.insert(name.clone(), target).is_some() {
            return Err(Error::new(format!("member {name:?} appears twice")));
        }
        Ok(())
    }

    fn read_name(&self, m: Member) -> Result<Vec<u8>> {
        if m.size > MAX_NAME as u64 {
            return Err(Error::new(format!(
                "a member name is longer than {MAX_NAME} bytes"
            )));
        }
        let mut name = vec![0u8; m.size as usize];
        self.file.read_exact_at(&mut name, m.offset)?;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        name.truncate(end);
        Ok(name)
    }

    fn read_pax(&self, m: Member, pending: &mut Pending) -> Result<()> {
        if m.size > MAX_PAX {
            return Err(Error::new(format!(
                "a PAX header is larger than {MAX_PAX} bytes"
            )));
        }
        let mut data = vec![0u8; m.size as usize];
        self.file.read_exact_at(&mut data, m.offset)?;
        for ext in tar::PaxExtensions::new(&data) {
            let ext = ext.map_err(|_| Error::new("a PAX header is malformed"))?;
            match ext.key_bytes() {
                b"path" => pending.name = Some(ext.value_bytes().to_vec()),
                b"linkpath" => pending.link = Some(ext.value_bytes().to_vec()),
                _ => {}
            }
        }
        Ok(())
    }

    /// The member `name` (following links inside the archive), if there is one.
    pub fn get(&self, name: &str) -> Option<Member> {
        let mut name = name.trim_start_matches("./");
        for _ in 0..=MAX_LINK_HOPS {
            if let Some(m) = self.files.get(name) {
                return Some(*m);
            }
            name = self.links.get(name)?;
        }
        None
    }

    /// Names of the regular-file members.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The whole member `name`, refused when larger than `max` bytes; `None` if absent.
    pub fn read_small(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let Some(m) = self.get(name) else {
            return Ok(None);
        };
        if m.size > max {
            return Err(Error::new(format!(
                "{}: member {name:?} is {} bytes, more than the {max} accepted",
                self.what, m.size
            ))
            .hint("the archive is not one an image tool wrote"));
        }
        let mut data = vec![0u8; m.size as usize];
        self.file
            .read_exact_at(&mut data, m.offset)
            .with_context(|| format!("read {name:?} in {}", self.what))?;
        Ok(Some(data))
    }

    /// A reader of one member's bytes.
    pub fn section(&self, m: Member) -> Section<'_> {
        Section {
            file: &self.file,
            member: m,
            pos: 0,
        }
    }
}

/// The tar header checksum (unsigned sum of the header with the checksum field as spaces).
fn check_checksum(block: &[u8; BLOCK as usize]) -> std::result::Result<(), &'static str> {
    let header = tar::Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|_| "a header checksum is unreadable")?;
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    if sum == stored {
        Ok(())
    } else {
        Err("a header checksum is wrong")
    }
}

fn odd_name(name: &str) -> Error {
    Error::new(format!(
        "member name {name:?} is not allowed in an image archive"
    ))
    .hint("the archive is damaged or was crafted; do not use it")
}

/// A member name made canonical: leading `./` and trailing `/` dropped; names that are not
/// UTF-8, absolute, or hold `..`, `.`, empty components or NUL are refused.
fn member_name(raw: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| odd_name(&String::from_utf8_lossy(raw)))?
        .to_string();
    if raw.len() > MAX_NAME {
        return Err(odd_name(&text.chars().take(64).collect::<String>()));
    }
    let mut name = text.as_str();
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    let name = name.trim_end_matches('/');
    if name == "." || name.is_empty() {
        return Ok(String::new()); // the archive's root directory
    }
    let bad = name.starts_with('/')
        || name.contains('\0')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(odd_name(&text));
    }
    Ok(name.to_string())
}

/// Where a link points, as a member name: symlinks are relative to the link's directory
/// (`..` allowed while it stays inside), hard links name a member. Escapes are refused.
fn link_target(name: &str, target: &[u8], symbolic: bool) -> Result<String> {
    let target = std::str::from_utf8(target).map_err(|_| odd_name(name))?;
    let escape = || {
        Error::new(format!(
            "member {name:?} links outside the archive (to {target:?})"
        ))
        .hint("the archive is damaged or was crafted; do not use it")
    };
    if target.starts_with('/') || target.len() > MAX_NAME || target.contains('\0') {
        return Err(escape());
    }
    let mut parts: Vec<&str> = Vec::new();
    if symbolic {
        parts.extend(name.split('/'));
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(escape)?;
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// One member's bytes, read by offset (the file is shared, never seeked); reads stop
/// once a signal arrived.
pub struct Section<'a> {
    file: &'a File,
    member: Member,
    pos: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.member.size - self.pos;
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        crate::signal::check()?; // a long local copy stops on Ctrl-C like a download
        let n = self
            .file
            .read_at(&mut buf[..want], self.member.offset + self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive file shrank while it was read",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl BlobSource for Section<'_> {
    fn rewind(&mut self, offset: u64) -> Result<()> {
        self.pos = offset.min(self.member.size);
        Ok(())
    }
}

/// A tar file being written in a temporary file beside its target.
pub struct TarWriter {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    /// Where the next header goes.
    pos: u64,
    /// Header offset of the member being streamed, if any.
    open: Option<u64>,
    done: bool,
}

impl TarWriter {
    /// Starts a tar that will replace `target` at [`TarWriter::finish`]; `what` names it.
    pub fn create(target: &Path, what: &str) -> Result<TarWriter> {
        let file_name = target
            .file_name()
            .ok_or_else(|| Error::new(format!("{what}: the path names no file")))?;
        if target.is_dir() {
            return Err(
                Error::new(format!("{what}: {} is a directory", target.display()))
                    .hint("give the path of an archive file to write"),
            );
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (file, tmp) = create_temp(&dir, &file_name.to_string_lossy()).map_err(|e| {
            let missing = e.kind() == std::io::ErrorKind::NotFound;
            let e = Error::from(e).context(format!("create {what}"));
            if missing {
                e.hint(format!("create the directory {} first", dir.display()))
            } else {
                e
            }
        })?;
        Ok(TarWriter {
            file,
            tmp,
            target: target.to_path_buf(),
            pos: 0,
            open: None,
            done: false,
        })
    }

    fn header(name: &str, size: u64, dir: bool) -> Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)
            .with_context(|| format!("tar member name {name:?}"))?;
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        Ok(h)
    }

    fn write_header(&mut self, at: u64, h: &tar::Header) -> Result<()> {
        self.file.write_all_at(h.as_bytes(), at)?;
        Ok(())
    }

    /// Adds a directory member (`name` without trailing slash).
    pub fn add_dir(&mut self, name: &str) -> Result<()> {
        let h = Self::header(&format!("{name}/"), 0, true)?;
        self.write_header(self.pos, &h)?;
        self.pos += BLOCK;
        Ok(())
    }

    /// Adds a file member holding `data`.
    pub fn add_bytes(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.start_member()?;
        self.write_all(data)?;
        self.end_member(name).map(drop)
    }

    /// Starts a member whose bytes are then written through `Write`; its name and size
    /// are set by [`TarWriter::end_member`].
    pub fn start_member(&mut self) -> Result<()> {
        if self.open.is_some() {
            return Err(Error::new("internal: a tar member is already open"));
        }
        self.open = Some(self.pos);
        self.pos += BLOCK;
        Ok(())
    }

    /// Ends the member being written, naming it; returns its size.
    pub fn end_member(&mut self, name: &str) -> Result<u64> {
        let at = self
            .open
            .take()
            .ok_or_else(|| Error::new("internal: no tar member is open"))?;
        let size = self.pos - at - BLOCK;
        let pad = (BLOCK - size % BLOCK) % BLOCK;
        self.write_all(&vec![0u8; pad as usize])?;
        let h = Self::header(name, size, false)?;
        self.write_header(at, &h)?;
        Ok(size)
    }

    /// Drops the member being written (its bytes are cut off the file).
    pub fn abort_member(&mut self) -> Result<()> {
        if let Some(at) = self.open.take() {
            self.pos = at;
            self.file.set_len(at)?;
        }
        Ok(())
    }

    /// Ends the tar, syncs it and renames it over the target.
    pub fn finish(mut self) -> Result<()> {
        if self.open.is_some() {
            return Err(Error::new("internal: a tar member is still open"));
        }
        self.write_all(&[0u8; 2 * BLOCK as usize])?;
        self.file.sync_all().context("sync archive")?;
        fs::rename(&self.tmp, &self.target)
            .with_context(|| format!("rename archive into {}", self.target.display()))?;
        self.done = true;
        if let Some(dir) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(())
    }
}

impl Write for TarWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TarWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A new file `.NAME.barge-PID-N` in `dir`, created exclusively.
fn create_temp(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    let pid = std::process::id();
    let mut last = None;
    for n in 0..100u32 {
        let tmp = dir.join(format!(".{name}.barge-{pid}-{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Copies `src` to `dst` through a large buffer; returns the bytes copied.
pub fn copy(src: &mut dyn Read, dst: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        dst.write_all(&buf[..n])?;
        total += n as u64;
        progress(n as u64);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the archive tests: scratch dirs, real tools, a small copier.
    use super::*;
    use crate::digest::{verify, Digest};
    use crate::image::{ImageDest, ImageSource, ManifestRole};
    use crate::manifest::{parse_manifest, Fetched};
    use crate::registry::source::Checked;
    use std::process::Command;

    /// A scratch directory removed on drop.
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> Scratch {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("barge-archive-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        pub fn join(&self, p: &str) -> PathBuf {
            self.0.join(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Runs a tool, failing the test loudly if it is missing or fails.
    pub fn run(tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
            panic!("required tool `{tool}` could not run ({e}); install the Debian packages in the Makefile's DEB_PACKAGES (`make deps`); these tests never skip")
        });
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An OCI layout at `dir` with image `tag`: two gzip layers (umoci), files from `seed`.
    pub fn umoci_layout(dir: &Path, tag: &str, seed: &str) {
        let d = dir.to_str().unwrap();
        run("umoci", &["init", "--layout", d]);
        run("umoci", &["new", "--image", &format!("{d}:{tag}")]);
        for i in 0..2 {
            let tar_path = dir.with_extension(format!("layer{i}.tar"));
            let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
            let body = format!("{seed} layer {i}\n").repeat(100 + i);
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("etc/file{i}"), body.as_bytes())
                .unwrap();
            b.into_inner().unwrap();
            run(
                "umoci",
                &[
                    "raw",
                    "add-layer",
                    "--image",
                    &format!("{d}:{tag}"),
                    tar_path.to_str().unwrap(),
                ],
            );
            fs::remove_file(&tar_path).unwrap();
        }
    }

    /// A blob of an OCI layout directory.
    pub fn layout_blob(dir: &Path, d: &Digest) -> Vec<u8> {
        fs::read(dir.join("blobs/sha256").join(d.hex())).unwrap()
    }

    /// The only image manifest of an OCI layout directory: its bytes, parsed.
    pub fn layout_manifest(dir: &Path) -> (Vec<u8>, crate::manifest::Manifest) {
        let index = fs::read(dir.join("index.json")).unwrap();
        let Fetched::Index(index) = parse_manifest(&index, None).unwrap() else {
            panic!("index.json is not an index")
        };
        assert_eq!(index.manifests.len(), 1, "one image expected");
        let bytes = layout_blob(dir, &index.manifests[0].digest);
        let Fetched::Manifest(m) = parse_manifest(&bytes, None).unwrap() else {
            panic!("not an image manifest")
        };
        (bytes, m)
    }

    /// A borrowed blob source, for [`Checked`] (which wants an owned one).
    pub struct Fwd<'a>(pub &'a mut dyn BlobSource);

    impl Read for Fwd<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl BlobSource for Fwd<'_> {
        fn rewind(&mut self, offset: u64) -> Result<()> {
            self.0.rewind(offset)
        }
    }

    /// Reads a blob whole, checking digest and size as a copier does.
    pub fn read_blob(
        src: &mut dyn ImageSource,
        desc: &crate::manifest::Descriptor,
    ) -> Result<Vec<u8>> {
        let mut blob = src.blob(desc)?;
        let mut checked = Checked::new(Fwd(&mut *blob));
        let mut out = Vec::new();
        checked.read_to_end(&mut out)?;
        let (got, n) = checked.finish();
        verify(&format!("blob {}", desc.digest), &desc.digest, &got)?;
        if n != desc.size {
            return Err(Error::new("blob size mismatch"));
        }
        Ok(out)
    }

    /// Copies the source's image (one manifest) to the destination, as `barge copy` will.
    pub fn copy_image(src: &mut dyn ImageSource, mut dst: Box<dyn ImageDest>) -> Result<Digest> {
        let raw = src.manifest()?;
        let Fetched::Manifest(m) = parse_manifest(&raw.bytes, raw.media_type.as_deref())? else {
            panic!("an index");
        };
        let mut blobs = vec![m.config.clone()];
        blobs.extend(m.layers.iter().cloned());
        let missing = dst.missing(&blobs)?;
        for (desc, missing) in blobs.iter().zip(missing) {
            if missing {
                let mut blob = src.blob(desc)?;
                let mut b = Checked::new(Fwd(&mut *blob));
                dst.put_blob(desc, &mut b, &mut |_| {})?;
                let (got, _) = b.finish();
                verify("blob", &desc.digest, &got)?;
            }
        }
        let digest = dst.put_manifest(&raw, ManifestRole::Top)?;
        dst.finish()?;
        Ok(digest)
    }

    #[test]
    fn names_are_normalized_and_odd_ones_refused() {
        assert_eq!(member_name(b"./a/b/").unwrap(), "a/b");
        assert_eq!(member_name(b"./").unwrap(), "");
        for bad in [
            &b"../x"[..],
            b"a/../../x",
            b"/etc/passwd",
            b"a//b",
            b"a/./b",
            b"\xff",
        ] {
            assert!(member_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            link_target("a/b/layer.tar", b"../c/layer.tar", true).unwrap(),
            "a/c/layer.tar"
        );
        assert_eq!(
            link_target("x/layer.tar", b"y/layer.tar", false).unwrap(),
            "y/layer.tar"
        );
        assert!(link_target("x/l", b"../../etc/passwd", true).is_err());
        assert!(link_target("l", b"/etc/passwd", true).is_err());
    }

    #[test]
    fn writer_round_trips_through_the_index_and_gnu_tar() {
        let s = Scratch::new("tarfile");
        let target = s.join("a.tar");
        let mut w = TarWriter::create(&target, "test").unwrap();
        w.add_dir("blobs").unwrap();
        w.add_bytes("blobs/one", b"hello").unwrap();
        w.start_member().unwrap();
        w.write_all(b"dropped").unwrap();
        w.abort_member().unwrap();
        w.start_member().unwrap();
        w.write_all(&[7u8; 1000]).unwrap();
        assert_eq!(w.end_member("two").unwrap(), 1000);
        assert!(!target.exists(), "nothing visible before finish");
        w.finish().unwrap();
        let idx = TarIndex::open(&target, "test").unwrap();
        assert_eq!(
            idx.read_small("./blobs/one", 10).unwrap().unwrap(),
            b"hello"
        );
        assert!(idx.read_small("two", 999).is_err());
        let mut two = Vec::new();
        idx.section(idx.get("two").unwrap())
            .read_to_end(&mut two)
            .unwrap();
        assert_eq!(two, vec![7u8; 1000]);
        let listing = run("tar", &["-tvf", target.to_str().unwrap()]);
        assert!(
            listing.contains("blobs/one") && !listing.contains("dropped"),
            "{listing}"
        );
        assert_eq!(fs::read_dir(&s.0).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn dropped_writer_leaves_the_old_file() {
        let s = Scratch::new("tardrop");
        let target = s.join("a.tar");
        fs::write(&target, b"old").unwrap();
        let mut w = TarWriter::create(&target, "test").unwrap();
        w.add_bytes("x", b"new").unwrap();
        drop(w);
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(&s.0).unwrap().count(), 1, "no temp file left");
    }

    fn tar_with(name: &str, size_field: Option<u64>, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(size_field.unwrap_or(data.len() as u64));
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn hostile_tars_are_refused() {
        let s = Scratch::new("tarhostile");
        let p = s.join("h.tar");
        let open = |bytes: Vec<u8>| {
            fs::write(&p, bytes).unwrap();
            TarIndex::open(&p, "docker-archive:h.tar").map(drop)
        };
        let e = open(tar_with("../evil", None, b"x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not allowed"), "{e}");
        let e = open(tar_with("big", Some(1 << 40), b"x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut cut = tar_with("ok", None, &[1u8; 2000]);
        cut.truncate(1000);
        let e = open(cut).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut bad = tar_with("ok", None, b"x");
        bad[0] = b'O';
        let e = open(bad).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        let e = open(b"{\"not\": \"a tar\"}".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a tar"), "{e}");
        assert!(open(tar_with("fine", None, b"x")).is_ok());
    }

    #[test]
    fn compressed_files_are_named_by_their_magic() {
        assert_eq!(compression_of(&[0x1f, 0x8b, 8, 0]).unwrap().0, "gzip");
        assert_eq!(
            compression_of(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap().0,
            "zstd"
        );
        assert_eq!(compression_of(b"\xfd7zXZ\0\0").unwrap().0, "xz");
        assert_eq!(compression_of(b"BZh91AY").unwrap().0, "bzip2");
        // A tar header starts with a member's name.
        assert!(compression_of(b"manifest.json\0\0\0").is_none());
        assert!(compression_of(&[]).is_none());
    }
}
