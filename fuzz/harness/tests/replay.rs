//! Replays every committed input of every fuzz target — the corpus (`fuzz/corpus/<target>`)
//! and the inputs that once crashed (`fuzz/regressions/<target>`) — through the targets'
//! bodies, without libFuzzer, so that plain `cargo test` keeps checking them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by a panic on any thread: a panic in a task the body spawned (a Raft core, a shard's
/// replicated write) does not unwind into the body, but is a finding all the same (libFuzzer
/// aborts on it).
static PANICKED: AtomicBool = AtomicBool::new(false);

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/")
        .to_path_buf()
}

/// The files of `fuzz/<kind>/<target>`, sorted (none if the folder does not exist).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, body) = parsec_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let corpus = inputs("corpus", target);
    let regressions = inputs("regressions", target);
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is empty: the seed corpus is part of the repository"
    );
    watch_panics();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).expect("readable input");
        eprintln!("{target}: {}", path.display());
        body(&data);
        assert!(
            !PANICKED.load(Ordering::SeqCst),
            "a thread panicked while {target} ran {}",
            path.display()
        );
    }
    println!(
        "{target}: replayed {} corpus inputs and {} regressions",
        corpus.len(),
        regressions.len()
    );
}

#[test]
fn every_target_has_a_test_here() {
    let mut names: Vec<&str> = parsec_fuzz::TARGETS.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    let source = include_str!("replay.rs");
    for name in names {
        assert!(
            source.contains(&format!("fn {name}()")),
            "add a replay test for target {name}"
        );
    }
}

#[test]
fn tx_decode() {
    replay("tx_decode");
}

#[test]
fn lock_table() {
    replay("lock_table");
}

#[test]
fn lua() {
    replay("lua");
}

#[test]
fn grpc() {
    replay("grpc");
}

#[test]
fn json_rpc() {
    replay("json_rpc");
}

/// The structured mode of the JSON-RPC target names every method the server implements.
#[test]
fn the_json_rpc_target_knows_every_method() {
    let api = include_str!("../../../services/evm/src/rpc/api.rs");
    let mut served: Vec<&str> = api
        .split("name = \"")
        .skip(1)
        .chain(api.split("unsubscribe = \"").skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    served.sort_unstable();
    served.dedup();
    let mut known: Vec<&str> = parsec_fuzz::json_rpc::METHODS.to_vec();
    known.sort_unstable();
    assert_eq!(known, served);
}

#[test]
fn raft() {
    replay("raft");
}
