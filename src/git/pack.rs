//! Writes git blobs straight into a pack file (with its `.idx`) while a layer unpacks.
//!
//! `git fast-import` spends most of `pull -g` hashing: SHA-1 with collision
//! detection over every blob, then again over the whole pack to fix up its
//! header. Here each file's bytes are hashed (SHA-1 with the CPU's SHA
//! instructions) and appended to the pack as they are written to disk, so git
//! only has to build trees and commits from the object ids. Objects are stored
//! uncompressed (zlib stored blocks), as fast-import did with compression 0;
//! `git repack -a -d -F` compresses them if the user wants (`git gc` reuses stored
//! data as it is). A blob already in this pack is taken back out.
//!
//! The pack is written under a temporary name in `.git/objects/pack/` and gets
//! its real name (`pack-<checksum>`) only when complete: `.pack` first, `.idx`
//! last, since git finds packs by their index. An unfinished pack is removed.
//! The index is version 1, which has no per-object CRC32 (that would be one more
//! pass over every byte) and 32-bit offsets: [`PackWriter::is_full`] says when
//! to start another pack. git reads both versions; `git gc` writes version 2.
//! Formats: git's Documentation/gitformat-pack.txt (pack v2, idx v1).

use sha1::{Digest as _, Sha1};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A git object id (SHA-1).
pub type Oid = [u8; 20];

/// Pack object type of a blob.
const OBJ_BLOB: u8 = 3;
/// Largest stored deflate block.
const STORED_MAX: u64 = 65_535;
/// Objects may start below this offset (idx v1 offsets are 32-bit).
const MAX_OFFSET: u64 = u32::MAX as u64;
const WRITE_BUF: usize = 1 << 20;

/// One object in the pack, for the index.
struct Placed {
    oid: Oid,
    offset: u32,
}

/// The blob being written.
struct Open {
    start: u64,
    /// Content bytes still due.
    left: u64,
    /// Bytes still due in the current stored block.
    block_left: u64,
    sha: Sha1,
    adler: Adler32,
}

/// A pack being written; see the module comment.
pub struct PackWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    /// Bytes written so far, header included.
    offset: u64,
    objects: Vec<Placed>,
    seen: HashSet<Oid>,
    open: Option<Open>,
}

impl PackWriter {
    /// Starts a pack in `dir` (a repository's `objects/pack`).
    pub fn create(dir: &Path) -> io::Result<PackWriter> {
        fs::create_dir_all(dir)?;
        let (tmp, file) = create_temp(dir, "pack")?;
        let mut w = PackWriter {
            dir: dir.to_path_buf(),
            tmp,
            out: BufWriter::with_capacity(WRITE_BUF, file),
            offset: 0,
            objects: Vec::new(),
            seen: HashSet::new(),
            open: None,
        };
        // The object count is filled in by `finish`.
        w.put(b"PACK\0\0\0\x02\0\0\0\0")?;
        Ok(w)
    }

    /// Whether the pack can take no more objects (an index v1 offset would overflow).
    pub fn is_full(&self) -> bool {
        self.offset >= MAX_OFFSET
    }

    /// Starts a blob of `size` bytes.
    pub fn begin_blob(&mut self, size: u64) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other("pack: previous blob not finished"));
        }
        if self.is_full() {
            return Err(io::Error::other("pack: full"));
        }
        let mut blob = Open {
            start: self.offset,
            left: size,
            block_left: 0,
            sha: Sha1::new(),
            adler: Adler32::new(),
        };
        blob.sha.update(format!("blob {size}\0").as_bytes());
        let mut head = object_header(OBJ_BLOB, size);
        head.extend_from_slice(&[0x78, 0x01]); // zlib: deflate, 32K window, no dictionary
        if size == 0 {
            head.extend_from_slice(&stored_block_header(0, true));
        }
        self.put(&head)?;
        self.open = Some(blob);
        Ok(())
    }

    /// The blob's next bytes; together exactly the size given to `begin_blob`.
    pub fn blob_data(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let Some(mut blob) = self.open.take() else {
            return Err(io::Error::other("pack: no blob open"));
        };
        if bytes.len() as u64 > blob.left {
            return Err(io::Error::other("pack: blob longer than its size"));
        }
        blob.sha.update(bytes);
        blob.adler.update(bytes);
        while !bytes.is_empty() {
            if blob.block_left == 0 {
                let len = blob.left.min(STORED_MAX);
                let head = stored_block_header(len as u16, len == blob.left);
                self.put(&head)?;
                blob.block_left = len;
            }
            let n = (blob.block_left as usize).min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            self.put(now)?;
            blob.block_left -= n as u64;
            blob.left -= n as u64;
            bytes = rest;
        }
        self.open = Some(blob);
        Ok(())
    }

    /// Ends the blob and returns its id. A blob this pack already holds is taken out again.
    pub fn end_blob(&mut self) -> io::Result<Oid> {
        let Some(blob) = self.open.take() else {
            return Err(io::Error::other("pack: no blob open"));
        };
        if blob.left != 0 {
            return Err(io::Error::other("pack: blob shorter than its size"));
        }
        self.put(&blob.adler.finish().to_be_bytes())?;
        let oid: Oid = blob.sha.finalize().into();
        let offset = u32::try_from(blob.start).map_err(|_| io::Error::other("pack: full"))?;
        if self.seen.insert(oid) {
            self.objects.push(Placed { oid, offset });
        } else {
            self.rewind(blob.start)?;
        }
        Ok(oid)
    }

    /// Completes the pack and its index under their final names. Returns the pack's
    /// name (`pack-<hex>`), or None (and leaves nothing behind) if it holds no object.
    pub fn finish(mut self) -> io::Result<Option<String>> {
        if self.open.is_some() {
            return Err(io::Error::other("pack: a blob is not finished"));
        }
        if self.objects.is_empty() {
            return Ok(None);
        }
        self.out.flush()?;
        let count = u32::try_from(self.objects.len())
            .map_err(|_| io::Error::other("pack: too many objects"))?;
        let file = self.out.get_mut();
        file.write_all_at(&count.to_be_bytes(), 8)?;
        let checksum = sha1_of_file(file, self.offset)?;
        file.seek(SeekFrom::End(0))?;
        file.write_all(&checksum)?;
        let name = format!("pack-{}", hex(&checksum));
        let pack = self.dir.join(format!("{name}.pack"));
        // Read-only, as git leaves its packs.
        file.set_permissions(fs::Permissions::from_mode(0o444))?;
        fs::rename(&self.tmp, &pack)?;
        self.tmp = PathBuf::new();
        self.objects.sort_unstable_by_key(|a| a.oid);
        let (tmp_idx, idx_file) = create_temp(&self.dir, "idx")?;
        let written = idx_file
            .set_permissions(fs::Permissions::from_mode(0o444))
            .and_then(|_| write_index(idx_file, &self.objects, &checksum))
            .and_then(|_| fs::rename(&tmp_idx, self.dir.join(format!("{name}.idx"))));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp_idx);
            let _ = fs::remove_file(&pack);
            return Err(e);
        }
        Ok(Some(name))
    }

    /// Appends bytes.
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the pack back to `offset` bytes.
    fn rewind(&mut self, offset: u64) -> io::Result<()> {
        self.out.flush()?;
        let file = self.out.get_mut();
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Creates `tmp_barge_<pid>_<n>.<ext>` in `dir`, never reusing an existing file.
fn create_temp(dir: &Path, ext: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut n = 0u32;
    loop {
        let path = dir.join(format!("tmp_barge_{pid}_{n}.{ext}"));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A pack object's type-and-size header: 3 bits of type, the size 4 then 7 bits at a time.
fn object_header(kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

/// A stored (uncompressed) deflate block header, starting on a byte boundary.
fn stored_block_header(len: u16, last: bool) -> [u8; 5] {
    let [l0, l1] = len.to_le_bytes();
    let [n0, n1] = (!len).to_le_bytes();
    [u8::from(last), l0, l1, n0, n1]
}

/// SHA-1 of the first `len` bytes of `file`.
fn sha1_of_file(file: &File, len: u64) -> io::Result<Oid> {
    let mut sha = Sha1::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    while at < len {
        let want = buf.len().min((len - at) as usize);
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = file.read_at(chunk, at)?;
        if n == 0 {
            return Err(io::Error::other("pack: shorter than written"));
        }
        sha.update(chunk.get(..n).unwrap_or_default());
        at += n as u64;
    }
    Ok(sha.finalize().into())
}

/// Writes an idx v1 for `objects` (sorted by id) of the pack with `checksum`:
/// fan-out table, (offset, id) pairs, pack checksum, own checksum.
fn write_index(file: File, objects: &[Placed], checksum: &Oid) -> io::Result<()> {
    let mut out = HashingWriter {
        inner: BufWriter::new(file),
        sha: Sha1::new(),
    };
    let mut fanout = [0u32; 256];
    for o in objects {
        if let Some(slot) = fanout.get_mut(usize::from(o.oid[0])) {
            *slot += 1;
        }
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        out.write_all(&total.to_be_bytes())?;
    }
    for o in objects {
        out.write_all(&o.offset.to_be_bytes())?;
        out.write_all(&o.oid)?;
    }
    out.write_all(checksum)?;
    let own: Oid = out.sha.clone().finalize().into();
    out.inner.write_all(&own)?;
    out.inner.flush()
}

/// Writes through while hashing what was written.
struct HashingWriter<W: Write> {
    inner: W,
    sha: Sha1,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex of an object id.
pub fn hex(oid: &Oid) -> String {
    oid.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adler-32 (RFC 1950), the zlib stream's checksum.
struct Adler32 {
    a: u32,
    b: u32,
}

impl Adler32 {
    const MOD: u32 = 65_521;
    /// Most bytes summed before `b` could overflow 32 bits.
    const NMAX: usize = 5552;

    fn new() -> Adler32 {
        Adler32 { a: 1, b: 0 }
    }

    /// Over n bytes x_i, `a` grows by the sum of x_i and `b` by n·a plus the sum of
    /// (n - i)·x_i. Summing those separately (no chain from byte to byte) lets the
    /// compiler vectorise the loop; NMAX keeps the weighted sum within 32 bits.
    fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(Self::NMAX) {
            let n = chunk.len() as u32;
            let (mut sum, mut weighted) = (0u32, 0u32);
            for (i, &x) in chunk.iter().enumerate() {
                sum += u32::from(x);
                weighted += (n - i as u32) * u32::from(x);
            }
            let a = u64::from(self.a) + u64::from(sum);
            let b = u64::from(self.b) + u64::from(n) * u64::from(self.a) + u64::from(weighted);
            self.a = (a % u64::from(Self::MOD)) as u32;
            self.b = (b % u64::from(Self::MOD)) as u32;
        }
    }

    fn finish(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .expect("git must be installed");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write_blob(w: &mut PackWriter, data: &[u8], step: usize) -> Oid {
        w.begin_blob(data.len() as u64).unwrap();
        for c in data.chunks(step.max(1)) {
            w.blob_data(c).unwrap();
        }
        w.end_blob().unwrap()
    }

    #[test]
    fn adler32_known_values() {
        let mut a = Adler32::new();
        a.update(b"Wikipedia");
        assert_eq!(a.finish(), 0x11e6_0398);
        let big = vec![0xffu8; 100_000];
        let mut one = Adler32::new();
        one.update(&big);
        let mut parts = Adler32::new();
        for c in big.chunks(777) {
            parts.update(c);
        }
        assert_eq!(one.finish(), parts.finish());
        assert_eq!(one.finish(), 0x149a_302c, "adler32 of 100000 bytes of 0xff");
    }

    #[test]
    fn object_header_encodes_type_and_size() {
        assert_eq!(object_header(OBJ_BLOB, 0), [0x30]);
        assert_eq!(object_header(OBJ_BLOB, 15), [0x3f]);
        assert_eq!(object_header(OBJ_BLOB, 16), [0xb0, 0x01]);
        assert_eq!(object_header(OBJ_BLOB, 100_000), [0xb0, 0xea, 0x30]);
    }

    #[test]
    fn git_reads_and_verifies_the_pack() {
        let dir = crate::commit::testutil::tmpdir("git-pack");
        git(&dir, &["init", "-q"]);
        let mut w = PackWriter::create(&dir.join(".git/objects/pack")).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 31 / 7) as u8).collect();
        let cases: Vec<(&[u8], usize)> = vec![
            (b"", 1),
            (b"hello\n", 1),
            (&big, 65_535),
            (&big, 4096),
            (&big[..65_535], 1000),
            (&big[..65_536], 65_536),
        ];
        let mut oids = Vec::new();
        for (data, step) in &cases {
            oids.push((write_blob(&mut w, data, *step), *data));
        }
        let name = w.finish().unwrap().expect("a pack");
        let pack_dir = dir.join(".git/objects/pack");
        let left: Vec<_> = fs::read_dir(&pack_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("tmp_"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        let idx = pack_dir.join(format!("{name}.idx"));
        let verify = git(&dir, &["verify-pack", "-v", idx.to_str().unwrap()]);
        // The same content twice is stored once: 5 distinct blobs.
        assert!(verify.contains("non delta: 5 objects"), "{verify}");
        for (oid, data) in oids {
            let want = git_hash(&dir, data);
            assert_eq!(hex(&oid), want);
            let out = Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(["cat-file", "blob", &want])
                .output()
                .unwrap();
            assert_eq!(out.stdout, data);
        }
        git(&dir, &["fsck", "--strict", "--no-dangling"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn git_hash(dir: &Path, data: &[u8]) -> String {
        let f = dir.join("hash-me");
        fs::write(&f, data).unwrap();
        git(dir, &["hash-object", f.to_str().unwrap()])
            .trim()
            .to_string()
    }

    #[test]
    fn misuse_and_empty_packs_leave_nothing() {
        let dir = crate::commit::testutil::tmpdir("git-pack-empty");
        let w = PackWriter::create(&dir).unwrap();
        assert_eq!(w.finish().unwrap(), None);
        {
            let mut w = PackWriter::create(&dir).unwrap();
            w.begin_blob(3).unwrap();
            assert!(w.blob_data(b"four").is_err());
        }
        {
            let mut w = PackWriter::create(&dir).unwrap();
            w.begin_blob(3).unwrap();
            w.blob_data(b"ab").unwrap();
            assert!(w.end_blob().is_err());
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
