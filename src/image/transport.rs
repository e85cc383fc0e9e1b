//! Image names with skopeo's transport prefixes: `docker://REF` (also the default
//! without a prefix), `oci:PATH[:REF]`, `oci-archive:FILE[:REF]` and
//! `docker-archive:FILE[:REPO:TAG]`. As in skopeo, the path ends at its first `:`.

use crate::error::{Error, Result};
use crate::reference::Reference;
use std::fmt;
use std::path::PathBuf;

/// Where an image named on the command line lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A registry (`docker://REF` or a plain image name).
    Docker(Reference),
    /// An OCI image layout directory, and the `org.opencontainers.image.ref.name` in it.
    Oci {
        path: PathBuf,
        reference: Option<String>,
    },
    /// An OCI image layout in a tar file.
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// What `docker save` writes; `reference` is `REPO:TAG` in its manifest.json.
    DockerArchive {
        path: PathBuf,
        reference: Option<String>,
    },
}

const DOCKER: &str = "docker://";
const OCI: &str = "oci:";
const OCI_ARCHIVE: &str = "oci-archive:";
const DOCKER_ARCHIVE: &str = "docker-archive:";
/// skopeo transports barge does not speak: named, so they are not taken for registries.
const UNSUPPORTED: &[&str] = &[
    "dir:",
    "containers-storage:",
    "docker-daemon:",
    "ostree:",
    "sif:",
    "tarball:",
];

impl Transport {
    /// Parses an image name as written by a user.
    pub fn parse(s: &str) -> Result<Transport> {
        if let Some(rest) = s.strip_prefix(DOCKER) {
            return Ok(Transport::Docker(Reference::parse(rest)?));
        }
        if let Some(rest) = s.strip_prefix(OCI) {
            let (path, reference) = path_and_ref(s, rest)?;
            return Ok(Transport::Oci { path, reference });
        }
        if let Some(rest) = s.strip_prefix(OCI_ARCHIVE) {
            let (path, reference) = path_and_ref(s, rest)?;
            return Ok(Transport::OciArchive { path, reference });
        }
        if let Some(rest) = s.strip_prefix(DOCKER_ARCHIVE) {
            let (path, reference) = path_and_ref(s, rest)?;
            return Ok(Transport::DockerArchive { path, reference });
        }
        if let Some(t) = UNSUPPORTED.iter().find(|t| s.starts_with(**t)) {
            return Err(Error::new(format!(
                "{s:?}: the {} transport is not supported",
                t.trim_end_matches(':')
            ))
            .hint("use docker://REF, oci:PATH[:REF], oci-archive:FILE[:REF] or docker-archive:FILE[:REPO:TAG]"));
        }
        Reference::parse(s).map(Transport::Docker).map_err(|e| {
            e.hint("name an image (debian:bookworm, docker://HOST/NAME:TAG) or a transport: oci:PATH[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REPO:TAG]")
        })
    }

    /// The registry reference, for the commands that only speak to registries.
    pub fn registry(&self) -> Option<&Reference> {
        match self {
            Transport::Docker(r) => Some(r),
            _ => None,
        }
    }

    /// The same image with relative paths made absolute (for barge's record).
    pub fn absolute(&self) -> Transport {
        let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        match self {
            Transport::Docker(r) => Transport::Docker(r.clone()),
            Transport::Oci { path, reference } => Transport::Oci {
                path: abs(path),
                reference: reference.clone(),
            },
            Transport::OciArchive { path, reference } => Transport::OciArchive {
                path: abs(path),
                reference: reference.clone(),
            },
            Transport::DockerArchive { path, reference } => Transport::DockerArchive {
                path: abs(path),
                reference: reference.clone(),
            },
        }
    }
}

/// `PATH[:REF]` after a transport prefix: the path ends at the first `:`.
fn path_and_ref(whole: &str, rest: &str) -> Result<(PathBuf, Option<String>)> {
    let (path, reference) = match rest.split_once(':') {
        Some((p, r)) => (p, Some(r)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(Error::new(format!("{whole:?}: no path"))
            .hint("write the path after the transport, e.g. oci:/media/usb/images:debian"));
    }
    if let Some(r) = reference {
        check_ref(whole, r)?;
    }
    Ok((PathBuf::from(path), reference.map(str::to_string)))
}

/// A layout's ref name or an archive's `REPO:TAG`: printable, no spaces, bounded.
fn check_ref(whole: &str, r: &str) -> Result<()> {
    let ok = !r.is_empty()
        && r.len() <= 256
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/@+".contains(&b));
    if ok {
        return Ok(());
    }
    Err(
        Error::new(format!("{whole:?}: invalid image ref {r:?} after the path")).hint(
            "a ref is letters, digits and . _ - : / @ +; paths cannot contain ':' (as in skopeo)",
        ),
    )
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, path, reference) = match self {
            Transport::Docker(r) => return write!(f, "{r}"),
            Transport::Oci { path, reference } => (OCI, path, reference),
            Transport::OciArchive { path, reference } => (OCI_ARCHIVE, path, reference),
            Transport::DockerArchive { path, reference } => (DOCKER_ARCHIVE, path, reference),
        };
        write!(f, "{prefix}{}", path.display())?;
        if let Some(r) = reference {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_are_recognised() {
        let t = Transport::parse("oci:/media/usb:debian").unwrap();
        assert_eq!(
            t,
            Transport::Oci {
                path: "/media/usb".into(),
                reference: Some("debian".into())
            }
        );
        assert_eq!(t.to_string(), "oci:/media/usb:debian");
        let t = Transport::parse("oci:layout").unwrap();
        assert_eq!(
            t,
            Transport::Oci {
                path: "layout".into(),
                reference: None
            }
        );
        let t = Transport::parse("docker-archive:/tmp/a.tar:repo/x:1").unwrap();
        assert_eq!(
            t,
            Transport::DockerArchive {
                path: "/tmp/a.tar".into(),
                reference: Some("repo/x:1".into())
            }
        );
        assert!(matches!(
            Transport::parse("oci-archive:a.tar").unwrap(),
            Transport::OciArchive { .. }
        ));
    }

    #[test]
    fn registry_names_with_and_without_docker_prefix() {
        for s in [
            "debian",
            "docker://debian",
            "localhost:5000/x:1",
            "docker://127.0.0.1:5000/a/b",
        ] {
            let t = Transport::parse(s).unwrap();
            assert!(t.registry().is_some(), "{s}");
        }
        assert_eq!(
            Transport::parse("docker://debian").unwrap().to_string(),
            "docker.io/library/debian:latest"
        );
    }

    #[test]
    fn bad_names_say_what_to_do() {
        for (s, want) in [
            ("oci:", "no path"),
            ("oci::x", "no path"),
            ("oci:/a:", "invalid image ref"),
            ("oci:/a:b c", "invalid image ref"),
            ("dir:/tmp/x", "not supported"),
            ("docker://", "empty name"),
            ("docker://docker://x", "invalid"),
        ] {
            let e = Transport::parse(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
