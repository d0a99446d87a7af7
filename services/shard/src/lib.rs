pub mod engine;
pub mod lock_table;
pub mod log;
pub mod metrics;
pub mod recovery;
pub mod service;
pub mod state_machine;

pub use engine::ShardEngine;
pub use service::ShardService;
