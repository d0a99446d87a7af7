#![no_main]
//! The lock table's command sequences; see `parsec_fuzz::lock_table`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| parsec_fuzz::lock_table::run(data));
