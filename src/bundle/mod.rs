//! `barge pull IMAGE --bundle DIR`: an OCI runtime bundle that `runc run` / `crun run`
//! take as it is. DIR holds:
//!
//! - `rootfs/`: the image's tree (with `-g`, the git repository and barge's record too);
//! - `config.json`: the runtime spec made from the image config ([`spec`]; the user
//!   looked up in the tree's own `/etc/passwd` and `/etc/group`, [`passwd`]);
//! - `image-config.json` and `image-manifest.json`: the image config and manifest
//!   byte for byte as pulled (their sha256 are the config digest and the manifest
//!   digest), as umoci keeps `umoci.json` beside its bundles.
//!
//! The whole bundle is built in a staging directory (the one `pull` uses for a tree,
//! [`Stage`]) and appears at DIR in one rename, config.json with the tree: a failed
//! pull leaves DIR as it was.

pub mod passwd;
pub mod spec;

use crate::error::{Context, Result};
use crate::json;
use crate::layer::fsroot::Root;
use crate::layer::stage::Stage;
use crate::manifest::ImageConfig;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The tree's directory inside the bundle (`root.path` of config.json).
pub const ROOTFS: &str = "rootfs";
pub const CONFIG: &str = "config.json";
pub const IMAGE_CONFIG: &str = "image-config.json";
pub const IMAGE_MANIFEST: &str = "image-manifest.json";
/// Mode of the bundle's files: runtimes run by another (rootless) user read them.
const FILE_MODE: u32 = 0o644;

/// What `--bundle` asks for besides the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BundleOptions {
    /// `--rootless`: a spec for `runc --rootless`, root mapped to the user running barge.
    pub rootless: bool,
}

/// A bundle being built; it becomes DIR on [`Staging::finish`] and vanishes if dropped.
pub struct Staging {
    stage: Stage,
    opts: BundleOptions,
}

impl Staging {
    /// Starts a bundle at `dir` (new or empty).
    pub fn create(dir: &Path, opts: BundleOptions, sync: bool) -> Result<Staging> {
        let mut stage = Stage::create(dir)?;
        if !sync {
            stage.no_sync();
        }
        Ok(Staging { stage, opts })
    }

    /// Where the tree is to be placed (pull stages and commits it there, then calls
    /// [`Staging::finish`]).
    pub fn rootfs(&self) -> PathBuf {
        self.stage.root_path().join(ROOTFS)
    }

    /// Writes config.json and the image's config and manifest beside the tree, then
    /// puts the bundle in place. The tree must be complete.
    pub fn finish(self, manifest: &[u8], config_bytes: &[u8], config: &ImageConfig) -> Result<()> {
        let dir = self.stage.root_path();
        let spec = make_spec(&self.rootfs(), config, self.opts.rootless)?;
        write_file(
            &dir.join(CONFIG),
            json::to_string_pretty_sorted(&spec).as_bytes(),
        )?;
        write_file(&dir.join(IMAGE_CONFIG), config_bytes)?;
        write_file(&dir.join(IMAGE_MANIFEST), manifest)?;
        self.stage.commit()
    }
}

/// config.json's content for the tree at `rootfs`.
pub fn make_spec(rootfs: &Path, config: &ImageConfig, rootless: bool) -> Result<json::JsonValue> {
    let process = spec::process(&config.raw).context("image config")?;
    let mut root = Root::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let user = passwd::resolve_in_tree(&mut root, &process.user)?;
    let ids = rootless.then(|| spec::Ids {
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
    });
    spec::build(&config.raw, &user, ids)
}

/// Whether the image gives the container something to run (else runc refuses with
/// "args must not be empty" until config.json's `process.args` is set).
pub fn has_command(config: &ImageConfig) -> bool {
    spec::process(&config.raw).is_ok_and(|p| !p.args.is_empty())
}

/// A new file (never replacing anything) with `data`, mode 0644; it becomes visible
/// at DIR only with the rest of the staged bundle.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        f.write_all(data)?;
        // The umask may have narrowed the mode.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE))
    };
    write().with_context(|| format!("writing {}", path.display()))
}
