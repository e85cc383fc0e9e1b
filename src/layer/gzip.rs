//! Streaming gunzip on miniz_oxide: a Read adapter that never holds a whole blob, with CRC32 and multi-member support.
