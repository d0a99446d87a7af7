//! `wal/meta`: the vote (and the committed log id known when it was saved).
//!
//! ```text
//! magic "PSCMETA\x01" | crc: u32 LE (CRC-32 of payload) | payload: postcard Meta
//! ```
//!
//! Replaced atomically: written to `meta.tmp`, fsynced, renamed over `meta`, directory fsynced.
//! A crash leaves either the old or the new file, so a bad CRC is corruption, never a crash.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{LogStoreError, corrupt, io};
use super::segment::sync_dir;
use crate::types::{LogId, Vote};

const MAGIC: [u8; 8] = *b"PSCMETA\x01";
const FILE: &str = "meta";
const TMP_FILE: &str = "meta.tmp";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) vote: Option<Vote>,
    /// Committed log id, durable in the log when the meta file was written.
    pub(crate) committed: Option<LogId>,
}

/// Reads `dir/meta`; `None` if there is none yet.
pub(crate) fn read(dir: &Path) -> Result<Option<Meta>, LogStoreError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", &path)(e)),
    };
    let Some((head, payload)) = bytes.split_at_checked(12) else {
        return Err(corrupt(&path, 0, "file too short"));
    };
    let mut crc = [0; 4];
    crc.copy_from_slice(&head[8..]);
    if head[..8] != MAGIC {
        return Err(corrupt(&path, 0, "bad magic"));
    }
    if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
        return Err(corrupt(&path, 12, "checksum mismatch"));
    }
    postcard::from_bytes(payload)
        .map(Some)
        .map_err(|e| corrupt(&path, 12, format!("undecodable: {e}")))
}

/// Replaces `dir/meta` with `meta`, durably.
pub(crate) fn write(dir: &Path, meta: &Meta) -> Result<(), LogStoreError> {
    let payload = postcard::to_allocvec(meta).map_err(|source| LogStoreError::Encode {
        what: "vote",
        source,
    })?;
    let mut bytes = Vec::with_capacity(12 + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(TMP_FILE);
    let path = dir.join(FILE);
    let mut file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    file.write_all(&bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("fsyncing", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io("renaming to", &path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let meta = Meta {
            vote: Some(Vote::new(4, 2)),
            committed: Some(LogId::new(CommittedLeaderId::new(3, 1), 9)),
        };
        write(dir.path(), &meta).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(meta));
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("meta") && err.contains("checksum"), "{err}");
    }
}
