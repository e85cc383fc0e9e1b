//! Talking to a registry (distribution API v2): authentication, requests, uploads.

pub mod auth;
pub mod budget;
pub mod client;
pub mod credentials;
pub mod fetch;
pub mod session;
pub mod source;
pub mod upload;
