//! The registry conversation as explicit states: ping, challenge, token, request; redirects and retries.
