#![no_main]
//! The Raft transport and admin API; see `parsec_fuzz::raft`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| parsec_fuzz::raft::run(data));
