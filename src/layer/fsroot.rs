//! A directory handle that only ever touches paths inside itself: every path resolved in the root (openat2 RESOLVE_IN_ROOT or an O_NOFOLLOW walk).
