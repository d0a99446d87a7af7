#![no_main]
//! The Shard, TicketMachine and Agent gRPC services; see `parsec_fuzz::grpc`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| parsec_fuzz::grpc::run(data));
