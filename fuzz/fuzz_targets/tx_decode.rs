#![no_main]
//! Transaction decoding; see `parsec_fuzz::tx_decode`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| parsec_fuzz::tx_decode::run(data));
