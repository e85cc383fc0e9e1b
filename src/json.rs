//! JSON helpers over tinyjson: typed field access with clear errors, and a writer with a stable key order (digests of what barge writes must not change between runs).
