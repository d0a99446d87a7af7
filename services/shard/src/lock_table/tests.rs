//! Tests of the lock table: one focused test per rule of the module docs, a model-based property
//! test over random interleavings of many tickets (safety after every step, then liveness), and
//! starvation scenarios on a hot key. Every step of every test checks the table's invariants.

use super::{Event, LockError, LockTable, Phase, TicketView, Wound};
use parsec_core::{AgentId, Key, LockMode, Ticket};
use proptest::prelude::*;
use std::collections::BTreeMap;

const R: LockMode = LockMode::Read;
const W: LockMode = LockMode::Write;
const AGENT: AgentId = AgentId(1);
const OTHER_AGENT: AgentId = AgentId(2);
/// The attempt number of a ticket's first try.
const FIRST: u32 = 0;

const A: &str = "a";
const B: &str = "b";
const C: &str = "c";
const D: &str = "d";
const HOT: &str = "hot";
/// An empty write set.
const NO_KEYS: &[Key] = &[];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn key(name: &str) -> Key {
    Key::copy_from_slice(name.as_bytes())
}

fn keys(names: &[&str]) -> Vec<Key> {
    names.iter().map(|name| key(name)).collect()
}

fn requests(requests: &[(&str, LockMode)]) -> Vec<(Key, LockMode)> {
    requests
        .iter()
        .map(|&(name, mode)| (key(name), mode))
        .collect()
}

#[track_caller]
fn assert_invariants(table: &LockTable) {
    if let Err(violation) = table.check_invariants() {
        panic!("lock table invariant violated: {violation}\n{table:#?}");
    }
}

/// `table.lock` for `ticket`, checking invariants; a refused request must not emit events.
#[track_caller]
fn try_lock(
    table: &mut LockTable,
    ticket: u64,
    attempt: u32,
    first: bool,
    reqs: &[(&str, LockMode)],
) -> Result<Vec<Event>, LockError> {
    let mut events = Vec::new();
    let result = table.lock(
        Ticket(ticket),
        attempt,
        AGENT,
        first,
        &requests(reqs),
        &mut events,
    );
    assert_invariants(table);
    match result {
        Ok(()) => Ok(events),
        Err(error) => {
            assert!(events.is_empty(), "refused request emitted {events:?}");
            Err(error)
        }
    }
}

/// Requests locks for the first attempt of `ticket`, marked `first` while the table does not
/// know the ticket yet (as a broker would), and returns the events.
#[track_caller]
fn lock(table: &mut LockTable, ticket: u64, reqs: &[(&str, LockMode)]) -> Vec<Event> {
    let first = table.ticket(Ticket(ticket)).is_none();
    try_lock(table, ticket, FIRST, first, reqs)
        .unwrap_or_else(|error| panic!("t{ticket} lock {reqs:?} refused: {error}"))
}

/// Commits or rolls back a ticket the table knows.
#[track_caller]
fn release(table: &mut LockTable, ticket: u64) -> Vec<Event> {
    let mut events = Vec::new();
    assert!(
        table.release(Ticket(ticket), &mut events),
        "t{ticket} unknown"
    );
    assert_invariants(table);
    events
}

#[track_caller]
fn try_prepare(
    table: &mut LockTable,
    ticket: u64,
    attempt: u32,
    writes: &[&str],
    lock_count: usize,
) -> Result<(), LockError> {
    let result = table.prepare(Ticket(ticket), attempt, &keys(writes), lock_count);
    assert_invariants(table);
    result
}

#[track_caller]
fn prepare(table: &mut LockTable, ticket: u64, writes: &[&str], lock_count: usize) {
    try_prepare(table, ticket, FIRST, writes, lock_count)
        .unwrap_or_else(|error| panic!("t{ticket} prepare refused: {error}"));
}

fn granted(ticket: u64, name: &str, mode: LockMode) -> Event {
    Event::Granted {
        ticket: Ticket(ticket),
        key: key(name),
        mode,
    }
}

fn wound(by: u64, name: &str) -> Wound {
    Wound {
        by: Ticket(by),
        key: key(name),
    }
}

fn wounded(victim: u64, by: u64, name: &str) -> Event {
    Event::Wounded {
        ticket: Ticket(victim),
        wound: wound(by, name),
    }
}

/// Events in a canonical order, for calls whose events span several keys (released in hash
/// order).
fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|event| format!("{event:?}"));
    events
}

/// The writer and the (sorted) readers of a key.
fn holders(table: &LockTable, name: &str) -> (Option<u64>, Vec<u64>) {
    let (writer, readers) = table.holders(name.as_bytes());
    let mut readers: Vec<u64> = readers.into_iter().map(|t| t.0).collect();
    readers.sort_unstable();
    (writer.map(|t| t.0), readers)
}

fn waiters(table: &LockTable, name: &str) -> Vec<(u64, LockMode)> {
    table
        .waiters(name.as_bytes())
        .into_iter()
        .map(|(t, mode)| (t.0, mode))
        .collect()
}

fn view(table: &LockTable, ticket: u64) -> TicketView {
    table
        .ticket(Ticket(ticket))
        .unwrap_or_else(|| panic!("t{ticket} unknown"))
}

fn phase(table: &LockTable, ticket: u64) -> Phase {
    view(table, ticket).phase
}

fn held(table: &LockTable, ticket: u64, name: &str) -> Option<LockMode> {
    table.held(Ticket(ticket), name.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Sharing and exclusion
// ---------------------------------------------------------------------------------------------

#[test]
fn reads_are_shared() {
    let mut table = LockTable::new();
    assert_eq!(lock(&mut table, 1, &[(A, R)]), vec![granted(1, A, R)]);
    assert_eq!(lock(&mut table, 2, &[(A, R)]), vec![granted(2, A, R)]);
    assert_eq!(holders(&table, A), (None, vec![1, 2]));
}

#[test]
fn queued_reads_are_granted_together() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W)]);
    assert!(lock(&mut table, 2, &[(A, R)]).is_empty());
    assert!(lock(&mut table, 3, &[(A, R)]).is_empty());
    assert_eq!(
        release(&mut table, 1),
        vec![granted(2, A, R), granted(3, A, R)]
    );
    assert_eq!(holders(&table, A), (None, vec![2, 3]));
    assert_eq!(table.waiting_requests(), 0);
}

#[test]
fn a_write_excludes_readers_and_writers() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W)]);
    assert!(lock(&mut table, 2, &[(A, R)]).is_empty());
    assert!(lock(&mut table, 3, &[(A, W)]).is_empty());
    assert_eq!(holders(&table, A), (Some(1), vec![]));
    assert_eq!(waiters(&table, A), vec![(2, R), (3, W)]);

    // The reader goes first; the writer still waits for it.
    assert_eq!(release(&mut table, 1), vec![granted(2, A, R)]);
    assert_eq!(waiters(&table, A), vec![(3, W)]);
    assert_eq!(release(&mut table, 2), vec![granted(3, A, W)]);
    assert_eq!(holders(&table, A), (Some(3), vec![]));
}

#[test]
fn a_read_excludes_writers() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R)]);
    assert!(lock(&mut table, 2, &[(A, W)]).is_empty());
    assert_eq!(holders(&table, A), (None, vec![1]));
    assert_eq!(release(&mut table, 1), vec![granted(2, A, W)]);
}

// ---------------------------------------------------------------------------------------------
// Queue order
// ---------------------------------------------------------------------------------------------

#[test]
fn the_queue_is_ordered_by_ticket_not_by_arrival() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W)]);
    assert!(lock(&mut table, 5, &[(A, W)]).is_empty());
    // Older, but arrives later: it is served first.
    assert!(lock(&mut table, 3, &[(A, W)]).is_empty());
    assert_eq!(waiters(&table, A), vec![(3, W), (5, W)]);

    assert_eq!(release(&mut table, 1), vec![granted(3, A, W)]);
    assert_eq!(release(&mut table, 3), vec![granted(5, A, W)]);
}

#[test]
fn a_waiting_write_at_the_head_holds_back_younger_reads() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R)]);
    assert!(lock(&mut table, 2, &[(A, W)]).is_empty());
    // Compatible with reader t1, but behind the waiting writer t2.
    assert!(lock(&mut table, 3, &[(A, R)]).is_empty());
    assert_eq!(holders(&table, A), (None, vec![1]));
    assert_eq!(waiters(&table, A), vec![(2, W), (3, R)]);

    assert_eq!(release(&mut table, 1), vec![granted(2, A, W)]);
    assert_eq!(release(&mut table, 2), vec![granted(3, A, R)]);
}

#[test]
fn an_older_read_arriving_later_is_granted_when_no_writer_holds() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R)]);
    assert!(lock(&mut table, 3, &[(A, W)]).is_empty());
    // t2 is older than the waiting writer t3, so it goes ahead of it and shares with t1.
    assert_eq!(lock(&mut table, 2, &[(A, R)]), vec![granted(2, A, R)]);
    assert_eq!(holders(&table, A), (None, vec![1, 2]));
    assert_eq!(waiters(&table, A), vec![(3, W)]);
    assert_eq!(phase(&table, 3), Phase::Active);

    assert!(release(&mut table, 1).is_empty());
    assert_eq!(release(&mut table, 2), vec![granted(3, A, W)]);
}

// ---------------------------------------------------------------------------------------------
// Upgrades
// ---------------------------------------------------------------------------------------------

#[test]
fn the_sole_reader_upgrades_at_once() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R)]);
    assert_eq!(lock(&mut table, 1, &[(A, W)]), vec![granted(1, A, W)]);
    assert_eq!(holders(&table, A), (Some(1), vec![]));
    assert_eq!(held(&table, 1, A), Some(W));
    assert_eq!((view(&table, 1).held, view(&table, 1).queued), (1, 0));
}

#[test]
fn an_upgrade_waits_for_an_older_reader() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R)]);
    lock(&mut table, 2, &[(A, R)]);
    assert!(lock(&mut table, 2, &[(A, W)]).is_empty());
    assert_eq!(held(&table, 2, A), Some(R));
    assert_eq!(waiters(&table, A), vec![(2, W)]);
    assert_eq!(phase(&table, 1), Phase::Active);

    assert_eq!(release(&mut table, 1), vec![granted(2, A, W)]);
    assert_eq!(holders(&table, A), (Some(2), vec![]));
    assert_eq!(held(&table, 2, A), Some(W));
}

#[test]
fn an_older_upgrade_wounds_a_younger_reader() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R)]);
    lock(&mut table, 2, &[(A, R)]);
    assert_eq!(
        lock(&mut table, 1, &[(A, W)]),
        vec![wounded(2, 1, A), granted(1, A, W)]
    );
    assert_eq!(holders(&table, A), (Some(1), vec![]));
}

// ---------------------------------------------------------------------------------------------
// Wound-wait
// ---------------------------------------------------------------------------------------------

#[test]
fn an_older_write_wounds_a_younger_writer_which_loses_everything() {
    let mut table = LockTable::new();
    // The victim t5 holds A (write) and B (read, shared with t6), and waits for C behind t4.
    lock(&mut table, 4, &[(C, W)]);
    lock(&mut table, 5, &[(A, W), (B, R), (C, W)]);
    lock(&mut table, 6, &[(B, R)]);
    assert!(lock(&mut table, 7, &[(A, W)]).is_empty());
    assert_eq!(table.waiting_requests(), 2);

    assert_eq!(
        lock(&mut table, 2, &[(A, W)]),
        vec![wounded(5, 2, A), granted(2, A, W)]
    );
    assert_eq!(phase(&table, 5), Phase::Wounded(wound(2, A)));
    assert_eq!((view(&table, 5).held, view(&table, 5).queued), (0, 0));
    assert_eq!(held(&table, 5, B), None);
    assert_eq!(holders(&table, A), (Some(2), vec![]));
    assert_eq!(holders(&table, B), (None, vec![6]));
    assert_eq!(waiters(&table, A), vec![(7, W)]);
    assert!(waiters(&table, C).is_empty());
    assert_eq!(table.waiting_requests(), 1);
    // Untouched: t7 is a younger waiter, not a holder.
    assert_eq!(phase(&table, 7), Phase::Active);
}

#[test]
fn an_older_write_wounds_every_younger_reader_and_waits_for_older_ones() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R)]);
    lock(&mut table, 4, &[(A, R)]);
    lock(&mut table, 5, &[(A, R), (B, W)]);
    assert_eq!(
        lock(&mut table, 2, &[(A, W)]),
        vec![wounded(4, 2, A), wounded(5, 2, A)]
    );
    assert_eq!(holders(&table, A), (None, vec![1]));
    assert_eq!(waiters(&table, A), vec![(2, W)]);
    assert_eq!(holders(&table, B), (None, vec![]));
    assert_eq!(phase(&table, 1), Phase::Active);

    // Other tickets can now take what the victims held.
    assert_eq!(lock(&mut table, 9, &[(B, W)]), vec![granted(9, B, W)]);
    assert_eq!(release(&mut table, 1), vec![granted(2, A, W)]);
}

#[test]
fn an_older_read_wounds_a_younger_writer() {
    let mut table = LockTable::new();
    lock(&mut table, 3, &[(A, W)]);
    assert_eq!(
        lock(&mut table, 1, &[(A, R)]),
        vec![wounded(3, 1, A), granted(1, A, R)]
    );
}

#[test]
fn a_younger_request_waits_for_an_older_holder() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W), (B, R)]);
    assert!(lock(&mut table, 2, &[(A, R), (B, W)]).is_empty());
    assert_eq!(phase(&table, 1), Phase::Active);
    assert_eq!((view(&table, 1).held, view(&table, 1).queued), (2, 0));
    assert_eq!((view(&table, 2).held, view(&table, 2).queued), (0, 2));

    assert_eq!(
        sorted(release(&mut table, 1)),
        sorted(vec![granted(2, A, R), granted(2, B, W)])
    );
}

#[test]
fn a_prepared_ticket_is_never_wounded() {
    let mut table = LockTable::new();
    lock(&mut table, 5, &[(A, W), (B, R)]);
    prepare(&mut table, 5, &[A], 2);
    assert!(lock(&mut table, 1, &[(A, R)]).is_empty());
    assert!(lock(&mut table, 2, &[(B, W)]).is_empty());
    assert_eq!(phase(&table, 5), Phase::Prepared);
    assert_eq!(holders(&table, A), (Some(5), vec![]));
    assert_eq!(holders(&table, B), (None, vec![5]));

    assert_eq!(
        sorted(release(&mut table, 5)),
        sorted(vec![granted(1, A, R), granted(2, B, W)])
    );
}

#[test]
fn an_older_writer_wounds_active_readers_but_waits_for_prepared_ones() {
    let mut table = LockTable::new();
    lock(&mut table, 5, &[(A, R)]);
    prepare(&mut table, 5, &[], 1);
    lock(&mut table, 6, &[(A, R)]);
    assert_eq!(lock(&mut table, 1, &[(A, W)]), vec![wounded(6, 1, A)]);
    assert_eq!(holders(&table, A), (None, vec![5]));
    assert_eq!(release(&mut table, 5), vec![granted(1, A, W)]);
}

#[test]
fn asking_again_for_a_held_mode_is_granted_at_once() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W), (B, R)]);
    assert!(lock(&mut table, 2, &[(A, W)]).is_empty());

    // Even with a waiter queued on the key, and reporting the mode actually held.
    assert_eq!(lock(&mut table, 1, &[(A, W)]), vec![granted(1, A, W)]);
    assert_eq!(lock(&mut table, 1, &[(A, R)]), vec![granted(1, A, W)]);
    assert_eq!(lock(&mut table, 1, &[(B, R)]), vec![granted(1, B, R)]);
    assert_eq!((view(&table, 1).held, view(&table, 1).queued), (2, 0));
    assert_eq!(table.waiting_requests(), 1);
}

// ---------------------------------------------------------------------------------------------
// Attempts
// ---------------------------------------------------------------------------------------------

#[test]
fn a_request_not_marked_first_for_an_unknown_ticket_is_refused() {
    let mut table = LockTable::new();
    assert_eq!(
        try_lock(&mut table, 1, FIRST, false, &[(A, W)]),
        Err(LockError::UnknownTicket(Ticket(1)))
    );
    assert_eq!((table.ticket_count(), table.locked_keys()), (0, 0));

    // A released ticket is forgotten just the same.
    lock(&mut table, 1, &[(A, W)]);
    release(&mut table, 1);
    assert_eq!(
        try_lock(&mut table, 1, FIRST, false, &[(B, R)]),
        Err(LockError::UnknownTicket(Ticket(1)))
    );
    assert_eq!(table.ticket_count(), 0);
}

#[test]
fn a_request_of_an_older_attempt_is_stale() {
    let mut table = LockTable::new();
    try_lock(&mut table, 1, 2, true, &[(A, W)]).expect("attempt 2 starts");
    let stale = Err(LockError::StaleAttempt {
        ticket: Ticket(1),
        attempt: 1,
        current: 2,
    });
    assert_eq!(
        try_lock(&mut table, 1, 1, true, &[(B, W)]).map(|_| ()),
        stale
    );
    assert_eq!(
        try_lock(&mut table, 1, 1, false, &[(B, W)]).map(|_| ()),
        stale
    );
    assert_eq!(try_prepare(&mut table, 1, 1, &[A], 1), stale);
    assert_eq!(held(&table, 1, B), None);
    assert_eq!(view(&table, 1).attempt, 2);
}

#[test]
fn the_first_request_of_a_newer_attempt_replaces_the_old_record() {
    let mut table = LockTable::new();
    lock(&mut table, 4, &[(C, W)]);
    lock(&mut table, 5, &[(A, W), (B, R), (C, R)]);
    assert!(lock(&mut table, 6, &[(A, W)]).is_empty());
    assert_eq!(table.waiting_requests(), 2);

    let events = try_lock(&mut table, 5, 1, true, &[(D, W)]).expect("attempt 1 starts");
    assert_eq!(events, vec![granted(6, A, W), granted(5, D, W)]);
    assert_eq!(
        view(&table, 5),
        TicketView {
            attempt: 1,
            agent: AGENT,
            phase: Phase::Active,
            held: 1,
            queued: 0,
        }
    );
    assert_eq!((held(&table, 5, A), held(&table, 5, B)), (None, None));
    assert!(waiters(&table, C).is_empty());
    assert_eq!(table.waiting_requests(), 0);
    assert_eq!(table.locked_keys(), 3); // A (t6), C (t4), D (t5)

    // The replaced attempt is now stale.
    assert_eq!(
        try_lock(&mut table, 5, FIRST, false, &[(B, R)]),
        Err(LockError::StaleAttempt {
            ticket: Ticket(5),
            attempt: FIRST,
            current: 1,
        })
    );
}

#[test]
fn a_newer_attempt_whose_first_request_was_lost_is_refused() {
    let mut table = LockTable::new();
    lock(&mut table, 5, &[(A, W)]);
    assert_eq!(
        try_lock(&mut table, 5, 1, false, &[(B, W)]),
        Err(LockError::UnknownTicket(Ticket(5)))
    );
    assert_eq!(held(&table, 5, B), None);
    assert_eq!(
        try_prepare(&mut table, 5, 1, &[], 0),
        Err(LockError::UnknownTicket(Ticket(5)))
    );
}

#[test]
fn a_prepared_ticket_cannot_be_reset_nor_extended() {
    let mut table = LockTable::new();
    lock(&mut table, 5, &[(A, W)]);
    prepare(&mut table, 5, &[A], 1);
    let already = Err(LockError::AlreadyPrepared(Ticket(5)));
    assert_eq!(try_lock(&mut table, 5, 1, true, &[(B, W)]), already);
    assert_eq!(try_lock(&mut table, 5, FIRST, false, &[(B, W)]), already);
    assert_eq!(phase(&table, 5), Phase::Prepared);
    assert_eq!(view(&table, 5).attempt, FIRST);
    assert_eq!(held(&table, 5, A), Some(W));
    assert_eq!(held(&table, 5, B), None);
}

#[test]
fn a_wounded_ticket_is_told_so_until_it_retries() {
    let mut table = LockTable::new();
    lock(&mut table, 5, &[(A, W)]);
    assert_eq!(
        lock(&mut table, 1, &[(A, W)]),
        vec![wounded(5, 1, A), granted(1, A, W)]
    );
    assert_eq!(
        try_lock(&mut table, 5, FIRST, false, &[(B, R)]),
        Err(LockError::Wounded {
            ticket: Ticket(5),
            wound: wound(1, A),
        })
    );
    assert_eq!(held(&table, 5, B), None);

    // The retry keeps the ticket number: it waits for the older t1, then gets the key.
    assert!(try_lock(&mut table, 5, 1, true, &[(A, W)]).is_ok_and(|events| events.is_empty()));
    assert_eq!(phase(&table, 5), Phase::Active);
    assert_eq!(waiters(&table, A), vec![(5, W)]);
    assert_eq!(release(&mut table, 1), vec![granted(5, A, W)]);
}

#[test]
fn the_same_attempt_from_another_agent_is_refused() {
    let mut table = LockTable::new();
    lock(&mut table, 5, &[(A, W)]);
    let mut events = Vec::new();
    let result = table.lock(
        Ticket(5),
        FIRST,
        OTHER_AGENT,
        false,
        &requests(&[(B, W)]),
        &mut events,
    );
    assert_invariants(&table);
    assert_eq!(
        result,
        Err(LockError::StaleAttempt {
            ticket: Ticket(5),
            attempt: FIRST,
            current: FIRST,
        })
    );
    assert!(events.is_empty());
    assert_eq!(held(&table, 5, B), None);
}

// ---------------------------------------------------------------------------------------------
// Prepare
// ---------------------------------------------------------------------------------------------

#[test]
fn prepare_of_a_wounded_ticket_says_who_wounded_it_and_where() {
    let mut table = LockTable::new();
    lock(&mut table, 5, &[(A, W)]);
    lock(&mut table, 2, &[(A, W)]);
    assert_eq!(
        try_prepare(&mut table, 5, FIRST, &[A], 1),
        Err(LockError::Wounded {
            ticket: Ticket(5),
            wound: wound(2, A),
        })
    );
    assert_eq!(phase(&table, 5), Phase::Wounded(wound(2, A)));
}

#[test]
fn prepare_with_requests_still_queued_is_refused() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W)]);
    assert_eq!(
        lock(&mut table, 2, &[(B, W), (A, R)]),
        vec![granted(2, B, W)]
    );
    assert_eq!(
        try_prepare(&mut table, 2, FIRST, &[B], 1),
        Err(LockError::LocksPending(Ticket(2)))
    );
    assert_eq!(phase(&table, 2), Phase::Active);
}

#[test]
fn prepare_needs_a_write_lock_on_every_written_key() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R), (B, W)]);
    assert_eq!(
        try_prepare(&mut table, 1, FIRST, &[B, A], 2),
        Err(LockError::WriteLockNotHeld {
            ticket: Ticket(1),
            key: key(A),
        })
    );
    assert_eq!(
        try_prepare(&mut table, 1, FIRST, &[C], 2),
        Err(LockError::WriteLockNotHeld {
            ticket: Ticket(1),
            key: key(C),
        })
    );
    assert_eq!(phase(&table, 1), Phase::Active);
}

#[test]
fn prepare_needs_the_brokers_lock_count() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W), (B, R)]);
    for expected in [1, 3] {
        assert_eq!(
            try_prepare(&mut table, 1, FIRST, &[A], expected),
            Err(LockError::LockCountMismatch {
                ticket: Ticket(1),
                held: 2,
                expected,
            })
        );
    }
    // A refused prepare leaves the ticket active: it can still be wounded.
    assert_eq!(
        lock(&mut table, 0, &[(A, W)]),
        vec![wounded(1, 0, A), granted(0, A, W)]
    );
}

#[test]
fn preparing_twice_is_harmless() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, W), (B, R)]);
    prepare(&mut table, 1, &[A], 2);
    prepare(&mut table, 1, &[A], 2);
    assert_eq!(phase(&table, 1), Phase::Prepared);
    assert_eq!(view(&table, 1).held, 2);
}

#[test]
fn prepare_of_an_unknown_ticket_is_refused() {
    let mut table = LockTable::new();
    assert_eq!(
        try_prepare(&mut table, 1, FIRST, &[], 0),
        Err(LockError::UnknownTicket(Ticket(1)))
    );
}

#[test]
fn releasing_a_prepared_ticket_grants_its_waiters() {
    let mut table = LockTable::new();
    lock(&mut table, 1, &[(A, R), (B, W)]);
    prepare(&mut table, 1, &[B], 2);
    assert!(lock(&mut table, 2, &[(A, W)]).is_empty());
    assert!(lock(&mut table, 3, &[(B, R)]).is_empty());
    assert!(lock(&mut table, 4, &[(B, R)]).is_empty());

    assert_eq!(
        sorted(release(&mut table, 1)),
        sorted(vec![granted(2, A, W), granted(3, B, R), granted(4, B, R)])
    );
    assert_eq!(table.ticket(Ticket(1)), None);
    let mut events = Vec::new();
    assert!(!table.release(Ticket(1), &mut events));
    assert!(events.is_empty());
}

#[test]
fn restored_prepared_tickets_hold_write_locks() {
    const RESTORED: u64 = 9;
    const RESTORED_ATTEMPT: u32 = 3;
    let mut table = LockTable::new();
    table.restore_prepared(Ticket(RESTORED), RESTORED_ATTEMPT, AGENT, keys(&[A, B]));
    assert_invariants(&table);
    assert_eq!(
        view(&table, RESTORED),
        TicketView {
            attempt: RESTORED_ATTEMPT,
            agent: AGENT,
            phase: Phase::Prepared,
            held: 2,
            queued: 0,
        }
    );
    assert_eq!(holders(&table, A), (Some(RESTORED), vec![]));
    assert_eq!(table.locked_keys(), 2);

    // Older tickets wait for it instead of wounding it.
    assert!(lock(&mut table, 1, &[(A, R)]).is_empty());
    assert!(lock(&mut table, 2, &[(B, W)]).is_empty());
    assert_eq!(phase(&table, RESTORED), Phase::Prepared);
    // Its broker's prepare (sent again after the failover) is accepted.
    assert_eq!(
        try_prepare(&mut table, RESTORED, RESTORED_ATTEMPT, &[A, B], 2),
        Ok(())
    );

    assert_eq!(
        sorted(release(&mut table, RESTORED)),
        sorted(vec![granted(1, A, R), granted(2, B, W)])
    );
}

#[test]
fn counters_follow_holders_and_waiters() {
    let mut table = LockTable::new();
    let counters = |table: &LockTable| {
        (
            table.locked_keys(),
            table.waiting_requests(),
            table.ticket_count(),
        )
    };
    assert_eq!(counters(&table), (0, 0, 0));

    lock(&mut table, 1, &[(A, W), (B, R)]);
    assert_eq!(counters(&table), (2, 0, 1));
    lock(&mut table, 2, &[(A, R), (B, R), (C, W)]);
    assert_eq!(counters(&table), (3, 1, 2));
    lock(&mut table, 3, &[(A, W), (C, R)]);
    assert_eq!(counters(&table), (3, 3, 3));
    assert_eq!((view(&table, 2).held, view(&table, 2).queued), (2, 1));
    assert_eq!((view(&table, 3).held, view(&table, 3).queued), (0, 2));

    assert_eq!(release(&mut table, 1), vec![granted(2, A, R)]);
    assert_eq!(counters(&table), (3, 2, 2));
    assert_eq!(
        sorted(release(&mut table, 2)),
        sorted(vec![granted(3, A, W), granted(3, C, R)])
    );
    assert_eq!(counters(&table), (2, 0, 1)); // B is idle and forgotten
    release(&mut table, 3);
    assert_eq!(counters(&table), (0, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Starvation
// ---------------------------------------------------------------------------------------------

/// A reader-preferring lock would starve the writer: a new reader could always share the key
/// with the current one. Here the waiting older writer holds back every younger reader.
#[test]
fn a_waiting_writer_is_not_starved_by_a_stream_of_younger_readers() {
    const OLD: u64 = 10;
    const FIRST_READER: u64 = 100;
    const READERS: u64 = 20;
    let mut table = LockTable::new();
    // A young reader holds the key and is prepared, so the old writer must wait for it.
    lock(&mut table, FIRST_READER, &[(HOT, R)]);
    prepare(&mut table, FIRST_READER, &[], 1);
    assert!(lock(&mut table, OLD, &[(HOT, W)]).is_empty());

    let stream = FIRST_READER + 1..=FIRST_READER + READERS;
    for reader in stream.clone() {
        assert!(lock(&mut table, reader, &[(HOT, R)]).is_empty());
        assert_eq!(holders(&table, HOT), (None, vec![FIRST_READER]));
    }
    assert_eq!(
        release(&mut table, FIRST_READER),
        vec![granted(OLD, HOT, W)]
    );
    assert_eq!(
        release(&mut table, OLD),
        stream
            .map(|reader| granted(reader, HOT, R))
            .collect::<Vec<_>>()
    );
}

/// One old ticket and a stream of younger tickets contend for a hot key. Every other ticket
/// prepares as soon as it gets the key (so the old one can never wound it: its worst case) and
/// commits one step later; a few even older tickets wound the old one whenever it holds the key.
/// The old ticket retries with the same number each time, so it is never overtaken by a younger
/// ticket while it waits, and commits once the older ones are gone.
#[test]
fn an_old_ticket_always_gets_the_hot_key_despite_a_stream_of_younger_tickets() {
    const OLD: u64 = 50;
    const OLDER: [u64; 3] = [1, 2, 3];
    const FIRST_YOUNG: u64 = 100;
    const HOLD_STEPS: usize = 3;
    const MAX_OLD_WAIT_STEPS: usize = 2;
    const MAX_STEPS: usize = 40;

    struct Sim {
        table: LockTable,
        step: usize,
        old_attempt: u32,
        old_wounded: bool,
        old_wounds: usize,
        old_requested_at: usize,
        old_granted_at: Option<usize>,
        /// Prepared holders of the hot key, committing at the next step.
        prepared: Vec<u64>,
    }

    impl Sim {
        fn old_waits(&self) -> bool {
            waiters(&self.table, HOT)
                .iter()
                .any(|&(ticket, _)| ticket == OLD)
        }

        fn react(&mut self, events: Vec<Event>) {
            for event in events {
                match event {
                    Event::Granted { ticket, mode, .. } if ticket == Ticket(OLD) => {
                        assert_eq!(mode, W);
                        let waited = self.step - self.old_requested_at;
                        assert!(waited <= MAX_OLD_WAIT_STEPS, "OLD waited {waited} steps");
                        self.old_granted_at = Some(self.step);
                    }
                    Event::Granted { ticket, mode, .. } => {
                        assert!(
                            ticket.0 < OLD || !self.old_waits(),
                            "younger {ticket} got the key while OLD waits for it"
                        );
                        let writes: &[&str] = if mode == W { &[HOT] } else { &[] };
                        prepare(&mut self.table, ticket.0, writes, 1);
                        self.prepared.push(ticket.0);
                    }
                    Event::Wounded { ticket, wound } => {
                        assert_eq!(ticket, Ticket(OLD), "only OLD holds the key unprepared");
                        assert!(OLDER.contains(&wound.by.0), "{wound:?}");
                        assert_eq!(wound.key, key(HOT));
                        self.old_wounded = true;
                        self.old_wounds += 1;
                        self.old_granted_at = None;
                    }
                }
            }
        }
    }

    let mut sim = Sim {
        table: LockTable::new(),
        step: 0,
        old_attempt: FIRST,
        old_wounded: false,
        old_wounds: 0,
        old_requested_at: 0,
        old_granted_at: None,
        prepared: Vec::new(),
    };
    let events = lock(&mut sim.table, OLD, &[(HOT, W)]);
    sim.react(events);
    let mut older = OLDER.iter().rev().copied().collect::<Vec<_>>();
    let mut young = FIRST_YOUNG..;
    let mut committed_at = None;

    for step in 0..MAX_STEPS {
        sim.step = step;
        // Prepared holders commit.
        for ticket in std::mem::take(&mut sim.prepared) {
            let events = release(&mut sim.table, ticket);
            sim.react(events);
        }
        // A wounded OLD rolls back and retries with the same ticket.
        if std::mem::take(&mut sim.old_wounded) {
            let events = release(&mut sim.table, OLD);
            sim.react(events);
            sim.old_attempt += 1;
            sim.old_requested_at = step;
            let events = try_lock(&mut sim.table, OLD, sim.old_attempt, true, &[(HOT, W)])
                .expect("OLD retries");
            sim.react(events);
        }
        // OLD, having held the key long enough, commits.
        if let Some(at) = sim.old_granted_at
            && step - at >= HOLD_STEPS
        {
            try_prepare(&mut sim.table, OLD, sim.old_attempt, &[HOT], 1).expect("OLD prepares");
            let events = release(&mut sim.table, OLD);
            sim.react(events);
            committed_at = Some(step);
            break;
        }
        // A younger ticket arrives: it waits behind OLD whenever OLD holds or waits.
        let ticket = young.next().expect("endless stream");
        let mode = if step % 2 == 0 { W } else { R };
        let events = lock(&mut sim.table, ticket, &[(HOT, mode)]);
        assert!(
            !(sim.old_granted_at.is_some() || sim.old_waits()) || events.is_empty(),
            "younger t{ticket} overtook OLD: {events:?}"
        );
        sim.react(events);
        // An older ticket arrives while OLD holds the key, and wounds it.
        if sim.old_granted_at.is_some_and(|at| step > at)
            && let Some(ticket) = older.pop()
        {
            let events = lock(&mut sim.table, ticket, &[(HOT, W)]);
            assert_eq!(events.first(), Some(&wounded(OLD, ticket, HOT)));
            sim.react(events);
        }
    }

    assert!(committed_at.is_some(), "OLD starved for {MAX_STEPS} steps");
    assert_eq!(sim.old_wounds, OLDER.len());
}

// ---------------------------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------------------------

/// Tickets of a lane are `generation * TICKET_STRIDE + lane order + 1`: unique, a lane's later
/// transactions are younger, and the order of lanes within a generation is random.
const TICKET_STRIDE: u64 = 16;
const MAX_LANES: usize = 8;
const MAX_KEYS: usize = 6;
const MAX_OPS: usize = 200;

#[derive(Clone, Debug)]
enum Op {
    /// The lane's transaction (a new one if it has none) asks for a batch of locks.
    Lock {
        lane: usize,
        batch: Vec<(usize, LockMode)>,
    },
    /// Prepare, with what the broker believes the transaction holds.
    Prepare { lane: usize },
    /// Commit or roll back.
    Release { lane: usize },
    /// Retry with the next attempt, re-asking for every lock of the attempt; with `rollback`, the
    /// broker first rolls the old attempt back, otherwise the new attempt replaces it.
    Retry { lane: usize, rollback: bool },
    /// Requests from a stale or lost attempt, which must all be refused.
    Stale { lane: usize },
}

fn op_strategy(lanes: usize, keys: usize) -> impl Strategy<Value = Op> {
    let request = (0..keys, prop_oneof![Just(R), Just(W)]);
    prop_oneof![
        6 => (0..lanes, prop::collection::vec(request, 1..=3))
            .prop_map(|(lane, batch)| Op::Lock { lane, batch }),
        3 => (0..lanes).prop_map(|lane| Op::Prepare { lane }),
        3 => (0..lanes).prop_map(|lane| Op::Release { lane }),
        2 => (0..lanes, any::<bool>()).prop_map(|(lane, rollback)| Op::Retry { lane, rollback }),
        1 => (0..lanes).prop_map(|lane| Op::Stale { lane }),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    keys: usize,
    /// Each lane's rank among the lanes of a generation.
    orders: Vec<u64>,
    ops: Vec<Op>,
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (2..=MAX_LANES, 1..=MAX_KEYS).prop_flat_map(|(lanes, keys)| {
        (
            Just((0..lanes as u64).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(op_strategy(lanes, keys), 1..=MAX_OPS),
        )
            .prop_map(move |(orders, ops)| Scenario { keys, orders, ops })
    })
}

/// A transaction as its broker sees it: built only from what the table answered.
#[derive(Debug)]
struct Txn {
    ticket: Ticket,
    attempt: u32,
    phase: Phase,
    /// Every lock this attempt asked for, in the strongest mode asked.
    requested: BTreeMap<Key, LockMode>,
    /// What the `Granted` events of this attempt gave it.
    held: BTreeMap<Key, LockMode>,
}

impl Txn {
    fn new(ticket: Ticket, attempt: u32, batch: &[(Key, LockMode)]) -> Self {
        let mut txn = Self {
            ticket,
            attempt,
            phase: Phase::Active,
            requested: BTreeMap::new(),
            held: BTreeMap::new(),
        };
        txn.ask(batch);
        txn
    }

    fn ask(&mut self, batch: &[(Key, LockMode)]) {
        for (key, mode) in batch {
            let asked = self.requested.entry(key.clone()).or_insert(*mode);
            *asked = LockMode::max(*asked, *mode);
        }
    }

    /// Requests not yet granted, with their mode.
    fn pending(&self) -> impl Iterator<Item = (&Key, LockMode)> {
        let active = self.phase == Phase::Active;
        self.requested
            .iter()
            .filter(move |(key, mode)| {
                active && !self.held.get(*key).is_some_and(|held| held.covers(**mode))
            })
            .map(|(key, mode)| (key, *mode))
    }

    fn writes(&self) -> Vec<Key> {
        self.held
            .iter()
            .filter(|(_, mode)| **mode == W)
            .map(|(key, _)| key.clone())
            .collect()
    }

    fn batch(&self) -> Vec<(Key, LockMode)> {
        self.requested
            .iter()
            .map(|(key, mode)| (key.clone(), *mode))
            .collect()
    }
}

/// A client running one transaction after another.
#[derive(Debug)]
struct Lane {
    order: u64,
    generation: u64,
    txn: Option<Txn>,
    /// The ticket of its last finished transaction.
    last: Option<Ticket>,
}

impl Lane {
    fn next_ticket(&self) -> Ticket {
        Ticket(self.generation * TICKET_STRIDE + self.order + 1)
    }
}

struct Harness {
    table: LockTable,
    keys: Vec<Key>,
    lanes: Vec<Lane>,
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        Self {
            table: LockTable::new(),
            keys: (0..scenario.keys).map(|i| key(&format!("k{i}"))).collect(),
            lanes: scenario
                .orders
                .iter()
                .map(|&order| Lane {
                    order,
                    generation: 0,
                    txn: None,
                    last: None,
                })
                .collect(),
        }
    }

    fn txns(&self) -> impl Iterator<Item = &Txn> {
        self.lanes.iter().filter_map(|lane| lane.txn.as_ref())
    }

    fn txn_mut(&mut self, ticket: Ticket) -> Option<&mut Txn> {
        self.lanes
            .iter_mut()
            .filter_map(|lane| lane.txn.as_mut())
            .find(|txn| txn.ticket == ticket)
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Lock { lane, batch } => {
                let batch: Vec<_> = batch
                    .iter()
                    .map(|&(k, mode)| (self.keys[k].clone(), mode))
                    .collect();
                self.lock(*lane, &batch)
            }
            Op::Prepare { lane } => self.prepare(*lane),
            Op::Release { lane } => self.release(*lane),
            Op::Retry { lane, rollback } => self.retry(*lane, *rollback),
            Op::Stale { lane } => self.stale(*lane),
        }
    }

    /// Applies the events of one call to the model, checking (d), (e) and (f). `caller` is the
    /// ticket whose requests `batch` the call made, if any: only it may wound.
    fn apply(
        &mut self,
        caller: Option<(Ticket, &[(Key, LockMode)])>,
        events: Vec<Event>,
    ) -> Result<(), TestCaseError> {
        for event in events {
            match event {
                Event::Granted { ticket, key, mode } => {
                    let txn = self
                        .txn_mut(ticket)
                        .ok_or_else(|| fail(format!("(f) {ticket} granted {key:?} but unknown")))?;
                    prop_assert_eq!(&txn.phase, &Phase::Active, "(f) {} granted", ticket);
                    let asked = txn.requested.get(&key).copied();
                    prop_assert!(
                        asked.is_some_and(|asked| asked.covers(mode)),
                        "{} granted {:?} {:?} but asked {:?}",
                        ticket,
                        key,
                        mode,
                        asked
                    );
                    let holds = txn.held.entry(key).or_insert(mode);
                    *holds = LockMode::max(*holds, mode);
                }
                Event::Wounded { ticket, wound } => {
                    let Some((by, batch)) = caller else {
                        return Err(fail(format!("{ticket} wounded by a release: {wound:?}")));
                    };
                    prop_assert_eq!(wound.by, by, "wounds come from the requester");
                    prop_assert!(batch.iter().any(|(key, _)| *key == wound.key));
                    prop_assert!(
                        wound.by.is_older_than(ticket),
                        "(d) {} wounded by younger {}",
                        ticket,
                        wound.by
                    );
                    let txn = self
                        .txn_mut(ticket)
                        .ok_or_else(|| fail(format!("unknown {ticket} wounded")))?;
                    prop_assert_eq!(&txn.phase, &Phase::Active, "(d, e) {} wounded", ticket);
                    prop_assert!(
                        txn.held.contains_key(&wound.key),
                        "{} wounded on a key it does not hold",
                        ticket
                    );
                    txn.phase = Phase::Wounded(wound);
                    txn.held.clear();
                }
            }
        }
        Ok(())
    }

    /// (a), (b), (c), and that the table agrees with the brokers' view of every ticket.
    fn check(&self) -> Result<(), TestCaseError> {
        self.table
            .check_invariants()
            .map_err(|violation| fail(format!("(a) {violation}")))?;
        prop_assert_eq!(self.table.ticket_count(), self.txns().count());
        let mut waiting = 0;
        for txn in self.txns() {
            let queued = txn.pending().count();
            waiting += queued;
            let expected = TicketView {
                attempt: txn.attempt,
                agent: AGENT,
                phase: txn.phase.clone(),
                held: txn.held.len(),
                queued,
            };
            prop_assert_eq!(self.table.ticket(txn.ticket), Some(expected));
            for key in &self.keys {
                prop_assert_eq!(self.table.held(txn.ticket, key), txn.held.get(key).copied());
            }
        }
        prop_assert_eq!(self.table.waiting_requests(), waiting);
        for key in &self.keys {
            let (writer, mut readers) = self.table.holders(key);
            readers.sort_unstable();
            prop_assert!(
                writer.is_none() || readers.is_empty(),
                "(c) {:?}: writer {:?} and readers {:?}",
                key,
                writer,
                readers
            );
            prop_assert!(
                readers.windows(2).all(|pair| pair[0] != pair[1]),
                "(c) {:?}: readers {:?}",
                key,
                readers
            );
            let holding = |mode| {
                let mut tickets: Vec<Ticket> = self
                    .txns()
                    .filter(|txn| txn.held.get(key) == Some(&mode))
                    .map(|txn| txn.ticket)
                    .collect();
                tickets.sort_unstable();
                tickets
            };
            let writers = holding(W);
            prop_assert!(writers.len() <= 1, "(c) {:?}: writers {:?}", key, writers);
            prop_assert_eq!(
                (writer, readers),
                (writers.first().copied(), holding(R)),
                "(b)"
            );

            let mut expected_waiters: Vec<(Ticket, LockMode)> = self
                .txns()
                .flat_map(|txn| {
                    txn.pending()
                        .filter(|(pending, _)| *pending == key)
                        .map(|(_, mode)| (txn.ticket, mode))
                })
                .collect();
            expected_waiters.sort_unstable();
            prop_assert_eq!(self.table.waiters(key), expected_waiters);
        }
        Ok(())
    }

    fn lock(&mut self, lane: usize, batch: &[(Key, LockMode)]) -> Result<(), TestCaseError> {
        let first = self.lanes[lane].txn.is_none();
        if first {
            let lane = &mut self.lanes[lane];
            lane.txn = Some(Txn::new(lane.next_ticket(), FIRST, &[]));
            lane.generation += 1;
        }
        let txn = self.lanes[lane].txn.as_mut().expect("started above");
        let ticket = txn.ticket;
        let mut events = Vec::new();
        let result = self
            .table
            .lock(ticket, txn.attempt, AGENT, first, batch, &mut events);
        match txn.phase.clone() {
            Phase::Active => {
                prop_assert_eq!(result, Ok(()));
                txn.ask(batch);
                self.apply(Some((ticket, batch)), events)?;
            }
            Phase::Wounded(wound) => {
                prop_assert_eq!(result, Err(LockError::Wounded { ticket, wound }));
                prop_assert!(events.is_empty());
            }
            Phase::Prepared => {
                prop_assert_eq!(result, Err(LockError::AlreadyPrepared(ticket)));
                prop_assert!(events.is_empty());
            }
        }
        self.check()
    }

    fn prepare(&mut self, lane: usize) -> Result<(), TestCaseError> {
        let Some(txn) = self.lanes[lane].txn.as_mut() else {
            if let Some(last) = self.lanes[lane].last {
                let result = self.table.prepare(last, FIRST, NO_KEYS, 0);
                prop_assert_eq!(result, Err(LockError::UnknownTicket(last)));
            }
            return self.check();
        };
        let ticket = txn.ticket;
        let result = self
            .table
            .prepare(ticket, txn.attempt, &txn.writes(), txn.held.len());
        match txn.phase.clone() {
            Phase::Active if txn.pending().next().is_some() => {
                prop_assert_eq!(result, Err(LockError::LocksPending(ticket)));
            }
            Phase::Active => {
                prop_assert_eq!(result, Ok(()));
                txn.phase = Phase::Prepared;
            }
            Phase::Wounded(wound) => {
                prop_assert_eq!(result, Err(LockError::Wounded { ticket, wound }));
            }
            Phase::Prepared => prop_assert_eq!(result, Ok(())),
        }
        self.check()
    }

    fn release(&mut self, lane: usize) -> Result<(), TestCaseError> {
        let mut events = Vec::new();
        match self.lanes[lane].txn.take() {
            Some(txn) => {
                prop_assert!(self.table.release(txn.ticket, &mut events));
                self.lanes[lane].last = Some(txn.ticket);
                self.apply(None, events)?;
            }
            None => {
                if let Some(last) = self.lanes[lane].last {
                    prop_assert!(!self.table.release(last, &mut events));
                    prop_assert!(events.is_empty());
                }
            }
        }
        self.check()
    }

    fn retry(&mut self, lane: usize, rollback: bool) -> Result<(), TestCaseError> {
        let Some(txn) = self.lanes[lane].txn.as_ref() else {
            return Ok(());
        };
        let (ticket, attempt, batch) = (txn.ticket, txn.attempt + 1, txn.batch());
        let mut events = Vec::new();
        if txn.phase == Phase::Prepared {
            let result = self
                .table
                .lock(ticket, attempt, AGENT, true, &batch, &mut events);
            prop_assert_eq!(result, Err(LockError::AlreadyPrepared(ticket)));
            prop_assert!(events.is_empty());
            return self.check();
        }
        if rollback {
            self.lanes[lane].txn = None;
            prop_assert!(self.table.release(ticket, &mut events));
            self.apply(None, std::mem::take(&mut events))?;
            self.check()?;
        }
        self.lanes[lane].txn = Some(Txn::new(ticket, attempt, &batch));
        let result = self
            .table
            .lock(ticket, attempt, AGENT, true, &batch, &mut events);
        prop_assert_eq!(result, Ok(()));
        self.apply(Some((ticket, &batch)), events)?;
        self.check()
    }

    fn stale(&mut self, lane: usize) -> Result<(), TestCaseError> {
        let probe = [(self.keys[0].clone(), W)];
        let mut events = Vec::new();
        let lane = &self.lanes[lane];
        match &lane.txn {
            None => {
                let ticket = lane.next_ticket();
                let result = self
                    .table
                    .lock(ticket, FIRST, AGENT, false, &probe, &mut events);
                prop_assert_eq!(result, Err(LockError::UnknownTicket(ticket)));
            }
            Some(txn) => {
                let (ticket, attempt) = (txn.ticket, txn.attempt);
                let lost = if txn.phase == Phase::Prepared {
                    LockError::AlreadyPrepared(ticket)
                } else {
                    LockError::UnknownTicket(ticket)
                };
                let result =
                    self.table
                        .lock(ticket, attempt + 1, AGENT, false, &probe, &mut events);
                prop_assert_eq!(result, Err(lost));
                let result = self.table.prepare(ticket, attempt + 1, NO_KEYS, 0);
                prop_assert_eq!(result, Err(LockError::UnknownTicket(ticket)));
                if attempt > FIRST {
                    let stale = LockError::StaleAttempt {
                        ticket,
                        attempt: attempt - 1,
                        current: attempt,
                    };
                    let result =
                        self.table
                            .lock(ticket, attempt - 1, AGENT, true, &probe, &mut events);
                    prop_assert_eq!(result, Err(stale.clone()));
                    let result = self.table.prepare(ticket, attempt - 1, NO_KEYS, 0);
                    prop_assert_eq!(result, Err(stale));
                }
            }
        }
        prop_assert!(events.is_empty());
        self.check()
    }

    /// Runs every transaction to its end: wounded ones retry, the ones with all their locks
    /// commit, the others wait. Returns the number of rounds it took, failing past `bound`.
    fn drive_to_completion(&mut self, bound: usize) -> Result<usize, TestCaseError> {
        for round in 0..bound {
            if self.lanes.iter().all(|lane| lane.txn.is_none()) {
                return Ok(round);
            }
            for lane in 0..self.lanes.len() {
                let Some(txn) = &self.lanes[lane].txn else {
                    continue;
                };
                match &txn.phase {
                    Phase::Wounded(_) => self.retry(lane, round % 2 == 0)?,
                    Phase::Prepared => self.release(lane)?,
                    Phase::Active if txn.pending().next().is_none() => {
                        self.prepare(lane)?;
                        prop_assert_eq!(
                            self.lanes[lane].txn.as_ref().map(|txn| &txn.phase),
                            Some(&Phase::Prepared)
                        );
                        self.release(lane)?;
                    }
                    Phase::Active => {}
                }
            }
        }
        let stuck: Vec<_> = self.txns().collect();
        Err(fail(format!(
            "no progress after {bound} rounds: {stuck:#?}\n{:#?}",
            self.table
        )))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_2pl_and_wound_wait_and_always_finish(
        scenario in scenario_strategy()
    ) {
        let mut harness = Harness::new(&scenario);
        for op in &scenario.ops {
            harness.run(op)?;
        }
        let bound = 10 * scenario.orders.len() * scenario.keys;
        harness.drive_to_completion(bound)?;
        prop_assert_eq!(harness.table.ticket_count(), 0);
        prop_assert_eq!(harness.table.locked_keys(), 0);
        prop_assert_eq!(harness.table.waiting_requests(), 0);
    }
}
