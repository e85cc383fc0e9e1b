//! Layers: the tar entries they hold, streamed decompression, applying them to a root, and (later) making them.

pub mod diff;
pub mod entry;
pub mod fsroot;
pub mod gzip;
pub mod leftovers;
pub mod names;
pub mod pack;
pub mod stage;
pub mod unpack;
pub mod zstd;
