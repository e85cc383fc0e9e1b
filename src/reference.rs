//! Image references: parse and normalise `[host[:port]/]path[:tag][@digest]` the way Docker does (docker.io, library/, latest).
