//! Ctrl-C and SIGTERM: set a flag that long loops check, so work stops cleanly and staging is removed.
