#![no_main]
//! Lua contract loading and execution; see `parsec_fuzz::lua`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| parsec_fuzz::lua::run(data));
