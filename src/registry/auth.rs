//! Registry authentication: WWW-Authenticate challenges, Bearer token fetch, Basic.
