//! Segment files: `wal/{id:020}.log`, ids consecutive from 1, each a header followed by records.
//!
//! ```text
//! magic "PSCWAL\0\x01" | salt: u64 LE | crc: u32 LE (CRC-32 of magic and salt)
//! ```
//!
//! The salt is random per segment and enters every record's CRC (see `record`).

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{LogStoreError, corrupt, io};

const MAGIC: [u8; 8] = *b"PSCWAL\0\x01";
/// Bytes before the first record.
pub(crate) const HEADER_LEN: usize = 20;

pub(crate) fn file_name(id: u64) -> String {
    format!("{id:020}.log")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first. Their ids must be consecutive: segments are only ever
/// deleted oldest first, so a gap means a file went missing.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogStoreError> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let item = item.map_err(io("listing", dir))?;
        if let Some(id) = item.file_name().to_str().and_then(parse_name) {
            segments.push((id, item.path()));
        }
    }
    segments.sort();
    for pair in segments.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(corrupt(
                &dir.join(file_name(pair[0].0 + 1)),
                0,
                "segment missing (the log has a gap)",
            ));
        }
    }
    Ok(segments)
}

/// A fresh random salt (std's `RandomState` is seeded from the OS).
fn new_salt() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn header(salt: u64) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The salt of a segment whose bytes are `buf`, if its header is intact.
pub(crate) fn read_header(buf: &[u8]) -> Option<u64> {
    let h = buf.get(..HEADER_LEN)?;
    let mut crc = [0; 4];
    crc.copy_from_slice(&h[16..]);
    if h[..8] != MAGIC || crc32fast::hash(&h[..16]) != u32::from_le_bytes(crc) {
        return None;
    }
    let mut salt = [0; 8];
    salt.copy_from_slice(&h[8..16]);
    Some(u64::from_le_bytes(salt))
}

/// fsyncs a directory, making file creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsyncing directory", dir))
}

/// The segment records are appended to.
pub(crate) struct ActiveSegment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    file: File,
    /// Bytes of the file (header and complete records).
    pub(crate) len: u64,
    pub(crate) salt: u64,
}

impl ActiveSegment {
    /// Creates (or replaces) segment `id` in `dir` with a header and, unless `checkpoint` (a
    /// sealed record, or empty) is empty, a first record. Durable when this returns: file and
    /// directory are fsynced, so no record is ever written to a segment that could vanish.
    pub(crate) fn create(
        dir: &Path,
        id: u64,
        checkpoint: impl FnOnce(u64) -> Result<Vec<u8>, LogStoreError>,
    ) -> Result<Self, LogStoreError> {
        let path = dir.join(file_name(id));
        let salt = new_salt();
        let mut bytes = header(salt).to_vec();
        bytes.extend_from_slice(&checkpoint(salt)?);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io("creating", &path))?;
        file.write_all_at(&bytes, 0).map_err(io("writing", &path))?;
        file.sync_all().map_err(io("fsyncing", &path))?;
        sync_dir(dir)?;
        Ok(ActiveSegment {
            id,
            path,
            file,
            len: bytes.len() as u64,
            salt,
        })
    }

    /// Reopens an existing segment whose first `len` bytes are valid, to append after them.
    pub(crate) fn reopen(
        path: PathBuf,
        id: u64,
        salt: u64,
        len: u64,
    ) -> Result<Self, LogStoreError> {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io("opening", &path))?;
        Ok(ActiveSegment {
            id,
            path,
            file,
            len,
            salt,
        })
    }

    /// Appends a sealed record and makes it durable (`fdatasync`: the data and the file size).
    pub(crate) fn append(&mut self, record: &[u8]) -> Result<(), LogStoreError> {
        self.file
            .write_all_at(record, self.len)
            .map_err(io("writing", &self.path))?;
        self.file.sync_data().map_err(io("fsyncing", &self.path))?;
        self.len += record.len() as u64;
        Ok(())
    }
}

/// Cuts `path` to its first `len` bytes, durably (a torn tail found on open).
pub(crate) fn truncate_file(path: &Path, len: u64) -> Result<(), LogStoreError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("opening", path))?;
    file.set_len(len).map_err(io("truncating", path))?;
    file.sync_all().map_err(io("fsyncing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_headers() {
        assert_eq!(file_name(1), "00000000000000000001.log");
        assert_eq!(parse_name(&file_name(123)), Some(123));
        assert_eq!(parse_name("1.log"), None);
        assert_eq!(parse_name("00000000000000000001.log.tmp"), None);
        let h = header(77);
        assert_eq!(read_header(&h), Some(77));
        let mut bad = h;
        bad[9] ^= 1;
        assert_eq!(read_header(&bad), None);
        assert_eq!(read_header(&h[..10]), None);
        assert_ne!(new_salt(), new_salt());
    }
}
