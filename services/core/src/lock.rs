//! Lock modes.

use serde::{Deserialize, Serialize};

/// A shared (read) or exclusive (write) lock on one key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    Read,
    Write,
}

impl LockMode {
    /// Whether holding `self` already grants what `wanted` asks for.
    pub fn covers(self, wanted: LockMode) -> bool {
        self >= wanted
    }

    /// Whether two holders in these modes may hold the same key at once.
    pub fn compatible(self, other: LockMode) -> bool {
        self == LockMode::Read && other == LockMode::Read
    }

    /// The stronger of two modes.
    pub fn max(self, other: LockMode) -> LockMode {
        std::cmp::max(self, other)
    }
}

#[cfg(test)]
mod tests {
    use super::LockMode::*;

    #[test]
    fn write_covers_read_but_not_the_reverse() {
        assert!(Write.covers(Read));
        assert!(Write.covers(Write));
        assert!(Read.covers(Read));
        assert!(!Read.covers(Write));
    }

    #[test]
    fn only_readers_share() {
        assert!(Read.compatible(Read));
        assert!(!Read.compatible(Write));
        assert!(!Write.compatible(Read));
        assert!(!Write.compatible(Write));
    }
}
