//! Vocabulary shared by every Parsec service: keys and values, ticket numbers, lock modes, the
//! directory that places keys on shards, and the cluster topology (`ClusterConfig`) that every
//! process reads at start and the operator renders.

pub mod config;
pub mod directory;
pub mod ids;
pub mod lock;
pub mod ticket;

pub use config::{ClusterConfig, ConfigError, Settings, TlsFiles};
pub use directory::Directory;
pub use ids::{AgentId, NodeId, ShardId};
pub use lock::LockMode;
pub use ticket::Ticket;

/// A key in the shared key space: opaque bytes. Runners give them structure (e.g. a one-byte
/// domain tag per kind of key), the shards never look inside.
pub type Key = bytes::Bytes;

/// A committed value. An absent key reads as the empty value.
pub type Value = bytes::Bytes;

/// The writes a transaction commits, ordered so that a replicated log entry built from it is
/// deterministic.
pub type WriteSet = std::collections::BTreeMap<Key, Value>;

/// A key as people read it in errors and logs: quoted text when it is printable, hex otherwise,
/// cut to a readable length.
pub fn display_key(key: &[u8]) -> String {
    const MAX: usize = 48;
    let shown = &key[..key.len().min(MAX)];
    let mut out = if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("\"{}\"", String::from_utf8_lossy(shown))
    } else {
        let mut s = String::from("0x");
        for b in shown {
            s.push_str(&format!("{b:02x}"));
        }
        s
    };
    if key.len() > MAX {
        out.push('…');
    }
    out
}

/// An error with its causes, `outer: inner: root` (tonic's own message is just "transport error").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::display_key;

    #[test]
    fn keys_display_as_text_or_hex() {
        assert_eq!(display_key(b"account_1"), "\"account_1\"");
        assert_eq!(display_key(&[0, 255]), "0x00ff");
        assert_eq!(display_key(b""), "\"\"");
        assert!(display_key(&[b'a'; 100]).ends_with('…'));
    }
}
