//! Ticket numbers: the timestamps of wound-wait.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A transaction's ticket. Tickets are unique cluster-wide and roughly ordered by the time they
/// were handed out: a smaller ticket is an older transaction, and an older transaction wins every
/// conflict (wound-wait). A retried transaction keeps its ticket, so it ages and eventually wins.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ticket(pub u64);

impl Ticket {
    /// Whether `self` has priority over `other` in wound-wait.
    pub fn is_older_than(self, other: Ticket) -> bool {
        self.0 < other.0
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}
