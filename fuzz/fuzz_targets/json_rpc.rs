#![no_main]
//! Ethereum JSON-RPC request handling; see `parsec_fuzz::json_rpc`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| parsec_fuzz::json_rpc::run(data));
