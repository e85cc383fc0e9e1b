//! The time barge stamps on what it makes (git commits, image config history):
//! `SOURCE_DATE_EPOCH` when set, for reproducible results, else now.

/// `SOURCE_DATE_EPOCH` if set, else now (seconds since the epoch).
pub fn now_or_epoch() -> i64 {
    if let Some(t) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
    {
        return t;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
