//! Apply one layer's tar stream to a root directory following the OCI changeset rules (whiteouts, opaque dirs, hardlinks, devices, xattrs).
