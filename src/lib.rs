//! barge as a library: the modules behind the `barge` binary (src/main.rs).
//!
//! Only what the binary calls is public: the command line (`cli`), the commands
//! (`pull`, `commit`, `push`, `copy`, `inspect`, `login`), signal handling, output (`progress`) and
//! the error type. The rest stays private to the crate, so unused code is still
//! reported. With the `fuzzing` feature, [`fuzzing`] adds one entry point per
//! parser of outside input for the cargo-fuzz targets in fuzz/.

mod bundle;
pub mod checkout;
pub mod cli;
mod clock;
pub mod commit;
pub mod copy;
mod digest;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod git;
mod http;
mod image;
pub mod initramfs;
pub mod inspect;
mod json;
mod layer;
pub mod login;
mod manifest;
#[cfg(all(target_arch = "x86_64", any(target_env = "musl", test)))]
mod memcpy;
pub mod progress;
pub mod pull;
pub mod push;
mod reference;
mod registry;
pub mod signal;
pub mod status;
mod store;
#[cfg(test)]
mod testutil;
