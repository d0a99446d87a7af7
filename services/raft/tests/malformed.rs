//! Regressions of the `raft` fuzz target: requests no correct peer sends, on which openraft
//! asserted (panicking the member's Raft core) or would have rewritten committed log, are
//! refused as malformed; the member keeps leading and writing; a correct peer's request still
//! goes through.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::{Cluster, config};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use parsec_raft::pb;
use parsec_raft::pb::raft_transport_server::RaftTransport;
use parsec_raft::{NodeId, TypeConfig};
use tonic::{Code, Request};

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn payload<T: serde::Serialize>(request: &T) -> Request<pb::RaftRequest> {
    Request::new(pb::RaftRequest {
        payload: Bytes::from(postcard::to_allocvec(request).expect("encodes")),
    })
}

fn blank(id: LogId<NodeId>) -> Entry<TypeConfig> {
    Entry {
        log_id: id,
        payload: EntryPayload::Blank,
    }
}

/// A one-member group, leading, with a few entries committed; its term and committed log id.
async fn leader() -> (Cluster, u64, LogId<NodeId>) {
    let cluster = Cluster::start(&[1], config()).await;
    cluster.init(&[1]).await;
    cluster.wait_leader(&[1]).await;
    cluster.write("a", "1").await;
    cluster.write("b", "2").await;
    let node = cluster.node(1);
    let term = node.metrics().current_term;
    let committed = node.metrics().last_applied.expect("applied");
    (cluster, term, committed)
}

async fn append(
    cluster: &Cluster,
    request: AppendEntriesRequest<TypeConfig>,
) -> Result<pb::RaftReply, tonic::Status> {
    let transport = cluster.node(1).transport_service();
    transport
        .append_entries(payload(&request))
        .await
        .map(|reply| reply.into_inner())
}

/// Refused as malformed, and the member still leads and commits.
async fn assert_refused(cluster: &Cluster, reply: Result<pb::RaftReply, tonic::Status>) {
    let status = reply.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().starts_with("malformed"), "{status}");
    assert!(cluster.node(1).is_leader());
    cluster.write("c", "3").await;
}

#[tokio::test]
async fn an_append_in_this_members_own_name_is_refused() {
    let (cluster, term, committed) = leader().await;
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(term, 1),
        prev_log_id: Some(committed),
        entries: Vec::new(),
        leader_commit: Some(committed),
    };
    assert_refused(&cluster, append(&cluster, request).await).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn entries_contradicting_the_committed_log_are_refused() {
    let (cluster, term, committed) = leader().await;
    // A later term's entry at index 0, below the committed index.
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(term + 5, 2),
        prev_log_id: None,
        entries: vec![blank(log_id(term + 5, 0))],
        leader_commit: None,
    };
    assert_refused(&cluster, append(&cluster, request).await).await;
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(term + 5, 2),
        prev_log_id: Some(log_id(term + 5, committed.index - 1)),
        entries: Vec::new(),
        leader_commit: None,
    };
    assert_refused(&cluster, append(&cluster, request).await).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_prev_log_id_at_the_committed_index_must_be_our_own() {
    let (cluster, term, committed) = leader().await;
    // Below our committed id in log order, at its index, but written by another leader of the
    // same term: what follows it would not follow our log.
    let other = |index| LogId::new(CommittedLeaderId::new(term, 0), index);
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(term + 1, 2),
        prev_log_id: Some(other(committed.index)),
        entries: vec![blank(other(committed.index + 1))],
        leader_commit: None,
    };
    assert_refused(&cluster, append(&cluster, request).await).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn entries_out_of_order_from_the_future_or_without_voters_are_refused() {
    let (cluster, term, committed) = leader().await;
    let next = committed.index + 1;
    let vote = Vote::new_committed(term + 1, 2);
    let with = |entries: Vec<Entry<TypeConfig>>| AppendEntriesRequest {
        vote,
        prev_log_id: Some(committed),
        entries,
        leader_commit: Some(committed),
    };
    let gap = with(vec![blank(log_id(term + 1, next + 1))]);
    assert_refused(&cluster, append(&cluster, gap).await).await;
    let future = with(vec![blank(log_id(term + 2, next))]);
    assert_refused(&cluster, append(&cluster, future).await).await;
    let backwards = with(vec![
        blank(log_id(term + 1, next)),
        blank(log_id(term, next + 1)),
    ]);
    assert_refused(&cluster, append(&cluster, backwards).await).await;
    // Same term, an earlier leader id after a later one (log ids order by term, then leader).
    let leader = |node, index| LogId::new(CommittedLeaderId::new(term + 1, node), index);
    let vote = Vote::new_committed(term + 1, 4);
    let swapped = AppendEntriesRequest {
        vote,
        prev_log_id: Some(committed),
        entries: vec![blank(leader(4, next)), blank(leader(0, next + 1))],
        leader_commit: Some(committed),
    };
    assert_refused(&cluster, append(&cluster, swapped).await).await;
    // Entries of a leader after the sender's leadership.
    let after_sender = with(vec![blank(leader(3, next))]);
    assert_refused(&cluster, append(&cluster, after_sender).await).await;
    let nodes = BTreeMap::from([(2, BasicNode::new("127.0.0.1:1"))]);
    let no_voter = Entry {
        log_id: log_id(term + 1, next),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::new()], nodes)),
    };
    assert_refused(&cluster, append(&cluster, with(vec![no_voter])).await).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_append_under_an_uncommitted_vote_is_refused() {
    let (cluster, term, committed) = leader().await;
    let request = AppendEntriesRequest {
        vote: Vote::new(term + 1, 2),
        prev_log_id: Some(committed),
        entries: Vec::new(),
        leader_commit: None,
    };
    assert_refused(&cluster, append(&cluster, request).await).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_vote_request_in_this_members_own_name_is_refused() {
    let (cluster, term, committed) = leader().await;
    let transport = cluster.node(1).transport_service();
    let request = VoteRequest {
        vote: Vote::new(term + 1, 1),
        last_log_id: Some(committed),
    };
    let reply = transport.vote(payload(&request)).await;
    assert_refused(&cluster, reply.map(|r| r.into_inner())).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_correct_leaders_append_goes_through() {
    let (cluster, term, committed) = leader().await;
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(term + 1, 2),
        prev_log_id: Some(committed),
        entries: vec![blank(log_id(term + 1, committed.index + 1))],
        leader_commit: Some(committed),
    };
    let reply = append(&cluster, request).await.expect("accepted");
    let response: Result<AppendEntriesResponse<NodeId>, openraft::error::RaftError<NodeId>> =
        postcard::from_bytes(&reply.payload).expect("decodes");
    assert!(
        matches!(response, Ok(AppendEntriesResponse::Success)),
        "{response:?}"
    );
    assert!(!cluster.node(1).is_leader(), "a newer leader took over");
    cluster.shutdown().await;
}
