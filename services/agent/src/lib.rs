pub mod access;
pub mod agent;
pub mod lua;
pub mod metrics;
pub mod runner;
pub mod service;
