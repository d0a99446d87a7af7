pub mod engine;
pub mod lock_table;
pub mod service;
pub mod state_machine;

pub use engine::ShardEngine;
pub use service::ShardService;
