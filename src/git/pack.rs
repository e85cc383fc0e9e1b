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
use std::collections::HashMap;
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

/// The blob being written.
struct Open {
    start: u64,
    /// Content bytes still due.
    left: u64,
    /// Bytes still due in the current stored block.
    block_left: u64,
    sha: Sha1,
    /// Adler-32 of the content so far (the zlib stream's trailer).
    adler: u32,
}

/// A pack being written; see the module comment.
pub struct PackWriter {
    dir: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    /// Bytes written so far, header included.
    offset: u64,
    /// The objects written: id → offset (one entry per id: duplicates are cut out).
    objects: HashMap<Oid, u32>,
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
            objects: HashMap::new(),
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

    /// Whether a blob is begun and not yet ended.
    pub fn blob_open(&self) -> bool {
        self.open.is_some()
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
            adler: 1,
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
        blob.adler = miniz_oxide::mz_adler32_oxide(blob.adler, bytes);
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
        self.put(&blob.adler.to_be_bytes())?;
        let oid: Oid = blob.sha.finalize().into();
        let offset = u32::try_from(blob.start).map_err(|_| io::Error::other("pack: full"))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = self.objects.entry(oid) {
            slot.insert(offset);
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
        let mut sorted: Vec<(Oid, u32)> = self.objects.drain().collect();
        sorted.sort_unstable();
        let (tmp_idx, mut idx_file) = create_temp(&self.dir, "idx")?;
        let written = idx_file
            .set_permissions(fs::Permissions::from_mode(0o444))
            .and_then(|_| idx_file.write_all(&index_bytes(&sorted, &checksum)))
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

/// The open blob's bytes, for `io::copy`.
impl Write for PackWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.blob_data(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
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
        let want = usize::try_from(len - at).map_or(buf.len(), |left| buf.len().min(left));
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

/// An idx v1 for `objects` (sorted by id) of the pack with `checksum`: fan-out
/// table, (offset, id) pairs, pack checksum, own checksum. 24 bytes an object,
/// as much as `objects` holds already.
fn index_bytes(objects: &[(Oid, u32)], checksum: &Oid) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * 4 + objects.len() * 24 + 40);
    let mut fanout = [0u32; 256];
    for (oid, _) in objects {
        if let Some(slot) = fanout.get_mut(usize::from(oid[0])) {
            *slot += 1;
        }
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for (oid, offset) in objects {
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(oid);
    }
    out.extend_from_slice(checksum);
    let own: Oid = Sha1::digest(&out).into();
    out.extend_from_slice(&own);
    out
}

/// Lower-case hex of an object id.
pub fn hex(oid: &Oid) -> String {
    oid.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::testutil::git;
    use std::process::Command;

    fn write_blob(w: &mut PackWriter, data: &[u8], step: usize) -> Oid {
        w.begin_blob(data.len() as u64).unwrap();
        for c in data.chunks(step.max(1)) {
            w.blob_data(c).unwrap();
        }
        w.end_blob().unwrap()
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
