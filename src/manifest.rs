//! Image manifests, indexes and configs (OCI and Docker schema2): parse, validate, and pick a platform.
