//! Atomic placement: extract into a staging directory and rename it into place only on success; remove it on failure.
