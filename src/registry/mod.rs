//! Talking to a registry (distribution API v2): authentication, requests, uploads.

pub mod auth;
pub mod budget;
pub mod client;
pub mod credentials;
pub mod fetch;
pub mod mirrors;
pub mod prefetch;
pub mod ramp;
pub mod session;
pub mod source;
mod toml;
pub mod upload;
