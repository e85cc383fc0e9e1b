//! Where credentials come from: -u, Docker's config.json, podman's auth.json.
