//! Records: the unit of one write (and of one fsync) to a segment.
//!
//! ```text
//! len: u32 LE | crc: u32 LE | payload: len bytes
//! crc = CRC-32 (crc32fast) of  salt: u64 LE | len: u32 LE | payload
//! payload = Op, Op, ...       (each op postcard-encoded, back to back)
//! ```
//!
//! The CRC covers the length (a damaged length is caught) and the segment's random salt: bytes
//! an application put into a command can never pass for a record of this segment, so a valid
//! record found after damaged bytes proves that the damage is not a torn tail (see `wal`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogId};

/// Bytes before the payload: length and CRC.
pub(crate) const HEADER_LEN: usize = 8;

/// One change to the log. The variant order is the on-disk tag: append new variants only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Op<'a> {
    /// An entry (borrowed when writing, to encode without cloning).
    Entry(Cow<'a, Entry>),
    /// Entries with index >= this were deleted (`truncate`).
    Truncate(u64),
    /// Entries up to this log id were deleted (`purge`); it becomes `last_purged`.
    Purge(LogId),
    /// The committed log id as last saved (a lower bound of the real one).
    Committed(Option<LogId>),
}

/// Appends `op` to a record's payload.
pub(crate) fn encode_op(op: &Op<'_>, payload: &mut Vec<u8>) -> Result<(), postcard::Error> {
    postcard::to_io(op, payload).map(|_| ())
}

/// Decodes every op of a payload.
pub(crate) fn decode_ops(mut payload: &[u8]) -> Result<Vec<Op<'static>>, postcard::Error> {
    let mut ops = Vec::new();
    while !payload.is_empty() {
        let (op, rest) = postcard::take_from_bytes::<Op<'static>>(payload)?;
        ops.push(op);
        payload = rest;
    }
    Ok(ops)
}

fn checksum(salt: u64, len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// A record being built: a placeholder header followed by the payload, sealed in place so that
/// the whole record goes to the file in one write without copying the payload.
pub(crate) struct RecordBuf {
    buf: Vec<u8>,
}

impl RecordBuf {
    pub(crate) fn new() -> Self {
        RecordBuf {
            buf: vec![0; HEADER_LEN],
        }
    }

    /// The payload, to append ops to.
    pub(crate) fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(crate) fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    /// Fills in the header; returns the whole record, or `None` if the payload exceeds 4 GiB.
    pub(crate) fn seal(&mut self, salt: u64) -> Option<&[u8]> {
        let len = u32::try_from(self.payload_len()).ok()?;
        let crc = checksum(salt, len, &self.buf[HEADER_LEN..]);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        Some(&self.buf)
    }

    /// Empties the record for reuse (keeps the allocation).
    pub(crate) fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
    }
}

/// What [`parse`] found at a position of a segment.
#[derive(Debug, PartialEq)]
pub(crate) enum Parsed<'a> {
    /// A complete record with a valid CRC; the next one starts at `next`.
    Record { payload: &'a [u8], next: usize },
    /// The end of the file, exactly at a record boundary.
    End,
    /// Not a valid record (torn write or corruption).
    Bad(&'static str),
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

/// Parses the record at `pos` of `buf` (a segment's bytes), written with `salt`.
pub(crate) fn parse(buf: &[u8], pos: usize, salt: u64) -> Parsed<'_> {
    let remaining = buf.len().saturating_sub(pos);
    if remaining == 0 {
        return Parsed::End;
    }
    if remaining < HEADER_LEN {
        return Parsed::Bad("incomplete record header");
    }
    let len = read_u32(buf, pos);
    let crc = read_u32(buf, pos + 4);
    // Every op encodes to at least one byte: a zero length is never written (zeros are what a
    // file extended by a crash before its data reached the disk reads as).
    if len == 0 {
        return Parsed::Bad("zero record length");
    }
    let start = pos + HEADER_LEN;
    let Some(end) = start
        .checked_add(len as usize)
        .filter(|&end| end <= buf.len())
    else {
        return Parsed::Bad("record extends past the end of the file");
    };
    let payload = &buf[start..end];
    if checksum(salt, len, payload) != crc {
        return Parsed::Bad("checksum mismatch");
    }
    Parsed::Record { payload, next: end }
}

/// The first position after `bad` (where [`parse`] failed) at which a valid record starts, if
/// any. Tries first where the damaged record's own length says the next one starts (a damaged
/// payload), then every byte (a damaged length).
pub(crate) fn valid_record_after(buf: &[u8], bad: usize, salt: u64) -> Option<usize> {
    let is_record = |p: usize| matches!(parse(buf, p, salt), Parsed::Record { .. });
    if buf.len() >= bad + HEADER_LEN {
        let next = bad + HEADER_LEN + read_u32(buf, bad) as usize;
        if next < buf.len() && is_record(next) {
            return Some(next);
        }
    }
    (bad + 1..buf.len()).find(|&p| is_record(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Normal(crate::Command(vec![vec![index as u8; 30]])),
        }
    }

    fn record(ops: &[Op<'_>], salt: u64) -> Vec<u8> {
        let mut rec = RecordBuf::new();
        for op in ops {
            encode_op(op, rec.payload()).unwrap();
        }
        rec.seal(salt).unwrap().to_vec()
    }

    #[test]
    fn ops_round_trip() {
        let e = entry(7);
        let ops = vec![
            Op::Entry(Cow::Borrowed(&e)),
            Op::Truncate(5),
            Op::Purge(LogId::new(CommittedLeaderId::new(1, 1), 3)),
            Op::Committed(None),
            Op::Committed(Some(e.log_id)),
        ];
        let buf = record(&ops, 42);
        let Parsed::Record { payload, next } = parse(&buf, 0, 42) else {
            panic!("not a record");
        };
        assert_eq!(next, buf.len());
        assert_eq!(decode_ops(payload).unwrap(), ops);
        assert_eq!(parse(&buf, next, 42), Parsed::End);
    }

    #[test]
    fn damage_is_detected() {
        let e = entry(1);
        let buf = record(&[Op::Entry(Cow::Borrowed(&e))], 9);
        // Another segment's salt.
        assert_eq!(parse(&buf, 0, 10), Parsed::Bad("checksum mismatch"));
        // Torn: any prefix.
        for cut in 1..buf.len() {
            assert!(
                matches!(parse(&buf[..cut], 0, 9), Parsed::Bad(_)),
                "cut {cut}"
            );
        }
        // Any flipped bit.
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(matches!(parse(&bad, 0, 9), Parsed::Bad(_)), "byte {i}");
        }
        assert_eq!(parse(&[0; 20], 0, 9), Parsed::Bad("zero record length"));
    }

    #[test]
    fn finds_the_record_after_damage() {
        let (a, b) = (entry(1), entry(2));
        let first = record(&[Op::Entry(Cow::Borrowed(&a))], 5);
        let second = record(&[Op::Entry(Cow::Borrowed(&b))], 5);
        let mut buf = [first.clone(), second].concat();
        // Damaged payload: found where the length points.
        buf[HEADER_LEN + 3] ^= 1;
        assert_eq!(valid_record_after(&buf, 0, 5), Some(first.len()));
        // Damaged length: found by scanning.
        buf[0] ^= 0x40;
        assert_eq!(valid_record_after(&buf, 0, 5), Some(first.len()));
        // Nothing valid after a torn tail.
        assert_eq!(valid_record_after(&first[..first.len() - 1], 0, 5), None);
    }
}
