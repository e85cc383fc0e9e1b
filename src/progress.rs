//! Progress lines on a terminal (bytes, total, rate), plain lines otherwise, nothing with -q.
