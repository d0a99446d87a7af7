//! The ticket machine: unique, roughly age-ordered ticket numbers handed out in ranges.
//!
//! Ticket numbers live on a nanosecond time line: a range starts no earlier than the ticket
//! machine's clock when it is allocated (and always after the previous range), so a ticket's
//! number says when its range was taken. Brokers take a range at a time — one replicated write
//! per range, never one per transaction — and drop a range that has grown older than a bound,
//! so tickets of different agents interleave by age whatever each agent's load. (PArSEC's
//! counter hands out plain blocks of 1000, so one agent's whole block beats another's.)

pub mod chain;
pub mod dispenser;
pub mod machine;
pub mod metrics;
pub mod service;

pub use chain::{ClockView, SealedParts};
pub use dispenser::{RangeSource, TicketDispenser, TicketError};
pub use machine::{TicketMachine, TicketRange};
pub use service::{BlockClockSource, ClockSettings, GrpcTicketMachine, TicketMachineService};
