//! Command-line parsing (lexopt): commands, their options, and `--help` texts.
//! Parsing only: nothing here touches the network or the disk.

use crate::bundle::BundleOptions;
use crate::checkout::CheckoutOptions;
use crate::commit::CommitOptions;
use crate::copy::CopyOptions;
use crate::error::{Error, Result};
use crate::inspect::{InspectOptions, Show};
use crate::login::LoginOptions;
use crate::progress::Progress;
use crate::pull::PullOptions;
use crate::push::PushOptions;
use crate::registry::client::{Connections, TransportOptions};
use crate::status::StatusOptions;
use lexopt::prelude::*;
use std::path::PathBuf;

pub const USAGE: &str = "\
barge: move container images between registries and plain directories

Usage: barge <COMMAND> [OPTIONS]

Commands:
  pull IMAGE     Fetch an image and lay its root filesystem out in a directory
  commit         Turn what changed in a pulled directory into a new layer
  status         List what `commit` would take (metadata changes included)
  checkout LAYER Put a pulled directory exactly at one of its layers
  push NAME      Upload a committed directory's image to a registry (or a layout)
  copy SRC DST   Copy an image between registries and OCI layouts, without a tree
  inspect IMAGE  Show an image's digest, layers and config as JSON, without pulling it
  initramfs      Pack a committed directory as a bootable initramfs (newc cpio)
  login [HOST]   Check credentials and store them for later commands
  logout [HOST]  Forget stored credentials
  version        Print barge's version
  help [COMMAND] Print this help, or a command's


Run `barge help <COMMAND>` or `barge <COMMAND> --help` for a command's options.
Options: -h, --help   print help;  -V, --version   print the version";

pub const PULL_HELP: &str = "\
Fetch IMAGE from its registry and lay its root filesystem out in DIR.

Usage: barge pull IMAGE [OPTIONS]

IMAGE is [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST]; the registry defaults to
Docker Hub (docker.io), the tag to `latest`, and single names get `library/`.
IMAGE may also name a transport as skopeo does: docker://REF, oci:PATH[:REF] (an
OCI image layout; without REF its only image), oci-archive:FILE[:REF] (the same in a
tar file), docker-archive:FILE[:REPO:TAG] (what `docker save` writes). Files are read
without network.

Options:
  -r, --rootfs DIR         Where to put the tree (default: rootfs); must be new or empty
  -g, --git                Make DIR a git repository with one branch per layer
      --bundle DIR         Make DIR an OCI runtime bundle instead (for `runc run -b DIR`):
                           the tree in DIR/rootfs (with -g, the repository too), config.json
                           from the image's Entrypoint, Cmd, Env, WorkingDir and User, and
                           the image's config and manifest as image-config.json and
                           image-manifest.json
      --rootless           With --bundle: a spec for rootless runc/crun, as `runc spec
                           --rootless` (user namespace mapping root to the user running barge)
  -u, --user USER[:PASS]   Credentials (default: from `barge login`, Docker's config.json and its
                           credential helpers, podman's auth file); without PASS, it is asked
                           for on the terminal without echo
      --password-stdin     Read the password for -u USER from standard input
      --platform OS/ARCH[/VARIANT]
                           Which image to take from a multi-platform index (default: this host's)
      --progress=auto|tty|plain|quiet
                           Progress lines: live bars on a terminal (tty), a line every 5 s
                           (plain), none (quiet); auto: tty if stdout is a terminal, else plain
  -q, --quiet              Print errors only (--progress=quiet)
      --no-sync            Do not wait for the tree to reach the disk (a power cut may lose it)
      --initramfs FILE     Also write a bootable initramfs (FILE.cpio or FILE.gz); without
                           -r no tree is left (see `barge initramfs --help` for /init)
      --init CMD [ARG...]  With --initramfs: the command /init runs; takes the rest of the line
      --ca-cert FILE       Trust this CA certificate (PEM) too; may be repeated
      --insecure HOST[:PORT]
                           Use plain HTTP for this registry (loopback hosts always do)
      --mirror [http://]HOST[:PORT][/NAMESPACE]
                           Try this mirror first (may be repeated), then the mirrors of
                           registries.conf and Docker's daemon.json, then the registry
      --low-speed-limit BYTES, --low-speed-time SECS
                           Abort a transfer slower than BYTES/s over SECS (default
                           1024 over 30) and retry; give up after 4*SECS without
                           progress. 0 turns the speed check off (slow links)
      --connections N|auto Download layers ahead in chunks on N connections at once (at
                           most 16; 1: one request per layer, in turn). auto (the
                           default; 1 for a registry on this machine): start with one,
                           add one while it raises the rate, up to 8
  -h, --help               Print this help";

pub const INITRAMFS_HELP: &str = "\
Pack DIR (pulled with -g, changes committed) as a newc cpio initramfs the kernel boots:
owners, modes, devices and hardlinks from barge's record, contents from DIR.

Usage: barge initramfs [-r DIR] -o FILE [--init CMD [ARG...]]

FILE ending in .gz is gzip-compressed, in .cpio plain. /init is the image's own /init
if it has one; else a #!/bin/sh script (the image needs /bin/sh) that mounts /proc,
/sys and /dev (devtmpfs), exports the image's Env (PATH defaults to Docker's), cd's
to its WorkingDir and execs Entrypoint + Cmd. /dev/console (char 5:1) and /dev, /proc,
/sys, /root are added where missing. SOURCE_DATE_EPOCH clamps every mtime.

Options:
  -r, --rootfs DIR         The committed tree (default: rootfs)
  -o, --output FILE        The archive to write (replaced only once complete)
      --init CMD [ARG...]  The command the generated /init execs instead of Entrypoint + Cmd
                           (replaces an /init of the image); takes the rest of the line
  -q, --quiet              Print errors only
  -h, --help               Print this help";

pub const COMMIT_HELP: &str = "\
Turn exactly what changed in DIR (pulled with -g) into a new layer on a new branch.

Usage: barge commit [-r DIR] -m MESSAGE

Options:
  -r, --rootfs DIR         The tree to commit (default: rootfs)
  -m, --message MESSAGE    What the layer does (kept in the image history)
      --progress=auto|tty|plain|quiet
                           As for pull and push: a meter while the layer is written (tty: live
                           bar, plain: a line every 5 s), then the summary; quiet: errors only
  -q, --quiet              Print errors only (--progress=quiet)
  -h, --help               Print this help

SOURCE_DATE_EPOCH, when set, fixes the layer's times: the same tree then gives the
same layer, config and manifest digests.";

pub const PUSH_HELP: &str = "\
Upload the image whose top layer is DIR's checked-out branch as NAME[:TAG].

Usage: barge push NAME[:TAG] [-r DIR] [-u USER[:PASS] [--password-stdin]]

NAME may also be oci:PATH[:REF]: the image goes into that OCI image layout
(created if need be; its other images are kept), oci-archive:FILE[:REF] or
docker-archive:FILE[:REPO:TAG] (the file is written whole, then renamed into place).

Layers the registry already has are not uploaded again; on the same registry they
are mounted from the repository the image was pulled from.

Options:
  -r, --rootfs DIR         The committed tree (default: rootfs)
  -u, --user USER[:PASS]   Credentials (default: from `barge login`, Docker's config.json and its
                           credential helpers, podman's auth file); without PASS, it is asked
                           for on the terminal without echo
      --password-stdin     Read the password for -u USER from standard input
      --progress=auto|tty|plain|quiet
                           Progress lines: live bars on a terminal (tty), a line every 5 s
                           (plain), none (quiet); auto: tty if stdout is a terminal, else plain
  -q, --quiet              Print errors only (--progress=quiet)
      --ca-cert FILE       Trust this CA certificate (PEM) too; may be repeated
      --insecure HOST[:PORT]
                           Use plain HTTP for this registry (loopback hosts always do)
      --low-speed-limit BYTES, --low-speed-time SECS
                           Abort a transfer slower than BYTES/s over SECS (default
                           1024 over 30) and retry; give up after 4*SECS without
                           progress. 0 turns the speed check off (slow links)
  -h, --help               Print this help";

pub const LOGIN_HELP: &str = "\
Check credentials against a registry and store them where Docker, podman and skopeo
read them: through the credential helper that $DOCKER_CONFIG/config.json (or
~/.docker/config.json) names (credHelpers, credsStore), else in its auths (mode 0600).

Usage: barge login [REGISTRY] [-u USER[:PASS]] [--password-stdin]

REGISTRY defaults to Docker Hub. Without a password, it is asked for on the terminal
without echo.

Options:
  -u, --user USER[:PASS]   The user name (and password)
      --password-stdin     Read the password from standard input
      --ca-cert FILE       Trust this CA certificate (PEM) too; may be repeated
      --insecure HOST[:PORT]
                           Use plain HTTP for this registry (loopback hosts always do)
      --low-speed-limit BYTES, --low-speed-time SECS
                           Abort a transfer slower than BYTES/s over SECS (default
                           1024 over 30) and retry; give up after 4*SECS without
                           progress. 0 turns the speed check off (slow links)
  -h, --help               Print this help";

pub const LOGOUT_HELP: &str = "\
Forget the credentials `barge login` (or docker login) stored for REGISTRY: erase them
through the credential helper $DOCKER_CONFIG/config.json (or ~/.docker/config.json)
names (credHelpers, credsStore), else remove them from its auths.

Usage: barge logout [REGISTRY]

REGISTRY defaults to Docker Hub.

Options:
  -h, --help               Print this help";

pub const STATUS_HELP: &str = "\
List what `barge commit` would take from DIR (pulled with -g), one line per path:
`A  path` added, `M  path (what changed)` changed (content, mode, owner, xattrs,
link target, type, hardlinks), `D  path` deleted; and the layer the tree is on.

Usage: barge status [-r DIR] [-q]

Options:
  -r, --rootfs DIR         The tree (default: rootfs)
  -q, --quiet              Only the change lines (nothing when clean)
  -h, --help               Print this help";

pub const CHECKOUT_HELP: &str = "\
Put DIR (pulled with -g) exactly at layer LAYER: content from git, then owners,
modes, hardlinks, xattrs, devices, empty directories and mtimes from barge's record.
Use it instead of `git checkout`, which loses all of these.

Usage: barge checkout LAYER [-r DIR] [--force]

LAYER is a branch name (layer_<N>_<chainid>), a layer number N (0 is the bottom),
or a ChainID (sha256:<hex> or a unique hex prefix; digits alone are a number).

Options:
  -r, --rootfs DIR         The tree (default: rootfs)
  -f, --force              Drop uncommitted changes (see `barge status`) instead of refusing
  -q, --quiet              Print errors only
  -h, --help               Print this help";

pub const COPY_HELP: &str = "\
Copy an image from SRC to DST without a tree on disk, as `skopeo copy` does.

Usage: barge copy SRC DST [--all | --platform OS/ARCH[/VARIANT]]

SRC and DST are docker://REF (or a plain image name: a registry), oci:PATH[:REF]
(an OCI image layout directory, created if need be; its other images are kept),
oci-archive:FILE[:REF] or docker-archive:FILE[:REPO:TAG] (docker save's format: its
layers are stored uncompressed).
Blobs stream from SRC to DST with their digests checked; blobs DST has are skipped,
blobs on the same registry are mounted. Manifests keep their bytes: the digest on
DST is the digest on SRC. Credentials come from `barge login` and Docker's files.

Options:
      --all                Copy a multi-platform index with every image (the index
                           digest is kept)
      --platform OS/ARCH[/VARIANT]
                           Which image of an index to copy (default: this host's)
      --progress=auto|tty|plain|quiet
                           Progress lines: live bars on a terminal (tty), a line every 5 s
                           (plain), none (quiet); auto: tty if stdout is a terminal, else plain
  -q, --quiet              Print errors only (--progress=quiet)
      --ca-cert FILE       Trust this CA certificate (PEM) too; may be repeated
      --insecure HOST[:PORT]
                           Use plain HTTP for this registry (loopback hosts always do)
      --mirror [http://]HOST[:PORT][/NAMESPACE]
                           Read SRC through this mirror first (may be repeated), then
                           registries.conf's and daemon.json's mirrors, then the registry
      --low-speed-limit BYTES, --low-speed-time SECS
                           Abort a transfer slower than BYTES/s over SECS (default
                           1024 over 30) and retry; give up after 4*SECS without
                           progress. 0 turns the speed check off (slow links)
  -h, --help               Print this help";

pub const INSPECT_HELP: &str = "\
Show what IMAGE is without pulling it: JSON on stdout shaped like `skopeo inspect`
(Name, Digest, RepoTags, Created, DockerVersion, Labels, Architecture, Os, Layers,
LayersData, Env), plus MediaType, Entrypoint, Cmd, WorkingDir, User, History and,
for a multi-platform index, Platforms.

Usage: barge inspect IMAGE [--raw | --config] [--platform OS/ARCH[/VARIANT]]

IMAGE is as for pull: a registry image (docker://REF), oci:PATH[:REF],
oci-archive:FILE[:REF] or docker-archive:FILE[:REPO:TAG].

Options:
      --raw                Print the manifest (or index) bytes exactly as stored
      --config             Print the image's config blob exactly as stored
      --platform OS/ARCH[/VARIANT]
                           Which image of an index to describe (default: this host's)
      --ca-cert FILE       Trust this CA certificate (PEM) too; may be repeated
      --insecure HOST[:PORT]
                           Use plain HTTP for this registry (loopback hosts always do)
      --mirror [http://]HOST[:PORT][/NAMESPACE]
                           Read IMAGE through this mirror first (may be repeated), then
                           registries.conf's and daemon.json's mirrors, then the registry
      --low-speed-limit BYTES, --low-speed-time SECS
                           As for pull
  -h, --help               Print this help";

/// A parsed command line.
pub enum Command {
    Status(StatusOptions),
    Checkout(CheckoutOptions),
    Help(&'static str),
    Version,
    Pull(PullOptions),
    Commit(CommitOptions, Progress),
    Push(PushOptions),
    Copy(CopyOptions),
    Inspect(InspectOptions),
    Login(LoginOptions),
    Logout(Option<String>),
    Initramfs(crate::initramfs::PackOptions),
}

impl Command {
    /// How error lines name the command: `pull debian:bookworm: `.
    pub fn label(&self) -> String {
        match self {
            Command::Help(_) | Command::Version => String::new(),
            Command::Status(o) => format!("status {}: ", o.root.display()),
            Command::Checkout(o) => format!("checkout {}: ", o.layer),
            Command::Pull(p) => format!("pull {}: ", p.image),
            Command::Commit(c, _) => format!("commit {}: ", c.root.display()),
            Command::Push(p) => format!("push {}: ", p.name),
            Command::Copy(c) => format!("copy {} {}: ", c.src, c.dst),
            Command::Inspect(i) => format!("inspect {}: ", i.image),
            Command::Login(_) => "login: ".to_string(),
            Command::Logout(_) => "logout: ".to_string(),
            Command::Initramfs(o) => format!("initramfs {}: ", o.root.display()),
        }
    }
}

/// Parses `args` (without the program name).
pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Command> {
    let mut parser = lexopt::Parser::from_args(args);
    let Some(arg) = parser.next().map_err(usage_error)? else {
        return Ok(Command::Help(USAGE));
    };
    match arg {
        Short('h') | Long("help") => Ok(Command::Help(USAGE)),
        Short('V') | Long("version") => Ok(Command::Version),
        Value(cmd) => match cmd.to_string_lossy().as_ref() {
            "pull" => parse_pull(&mut parser),
            "commit" => parse_commit(&mut parser),
            "status" => parse_status(&mut parser),
            "checkout" => parse_checkout(&mut parser),
            "push" => parse_push(&mut parser),
            "copy" => parse_copy(&mut parser),
            "inspect" => parse_inspect(&mut parser),
            "login" => parse_login(&mut parser),
            "logout" => parse_logout(&mut parser),
            "initramfs" => parse_initramfs(&mut parser),
            "help" => parse_help(&mut parser),
            "version" => Ok(Command::Version),
            other => Err(Error::new(format!("unknown command {other:?}"))
                .hint("run `barge --help` for the list of commands")),
        },
        other => Err(usage_error(other.unexpected())),
    }
}

fn parse_pull(p: &mut lexopt::Parser) -> Result<Command> {
    let mut image = None;
    let mut dir = PathBuf::from("rootfs");
    let (mut user, mut platform, mut git) = (None, None, false);
    let mut progress = Progress::Auto;
    let mut no_sync = false;
    let mut password_stdin = false;
    let mut transport = TransportOptions::default();
    let mut bundle = BundleArgs::default();
    let (mut dir_given, mut initramfs, mut init) = (false, None, None);
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(PULL_HELP)),
            Short('r') | Long("rootfs") => {
                dir = p.value().map_err(usage_error)?.into();
                bundle.rootfs = true;
                dir_given = true;
            }
            Long("bundle") => bundle.dir = Some(p.value().map_err(usage_error)?.into()),
            Long("rootless") => bundle.rootless = true,
            Long("initramfs") => initramfs = Some(PathBuf::from(p.value().map_err(usage_error)?)),
            Long("init") => init = Some(init_command(p)?),
            Short('u') | Long("user") => user = Some(string_value(p)?),
            Long("password-stdin") => password_stdin = true,
            Short('g') | Long("git") => git = true,
            Short('q') | Long("quiet") => progress = Progress::Quiet,
            Long("progress") => progress = progress_value(p)?,
            Long("no-sync") => no_sync = true,
            Long("platform") => platform = Some(string_value(p)?),
            Long("mirror") => transport.mirrors.push(string_value(p)?),
            Long(name) if TRANSPORT_OPTIONS.contains(&name) => {
                let name = name.to_string();
                transport_option(&name, p, &mut transport)?
            }
            Value(v) if image.is_none() => image = Some(os_string(v)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    let image = image
        .ok_or_else(|| Error::new("missing IMAGE").hint("usage: barge pull IMAGE [-r DIR]"))?;
    if bundle.dir.is_some() && initramfs.is_some() {
        return Err(Error::new("--bundle and --initramfs make different things")
            .hint("pull twice, or pull --bundle and then `barge initramfs -r DIR/rootfs` after a -g pull"));
    }
    let bundle = bundle.resolve(&mut dir)?;
    let initramfs = pull_initramfs(initramfs, init, dir_given, &mut dir)?;
    Ok(Command::Pull(PullOptions {
        image,
        dir,
        user,
        password_stdin,
        platform,
        progress,
        git,
        no_sync,
        transport,
        bundle,
        initramfs,
    }))
}

/// `--initramfs FILE [--init CMD...]`; without `-r`, the tree is staged beside FILE
/// (as `.NAME.rootfs`) and removed.
fn pull_initramfs(
    file: Option<PathBuf>,
    init: Option<Vec<String>>,
    dir_given: bool,
    dir: &mut PathBuf,
) -> Result<Option<crate::initramfs::InitramfsOptions>> {
    let Some(file) = file else {
        if init.is_some() {
            return Err(Error::new("--init needs --initramfs FILE")
                .hint("usage: barge pull IMAGE --initramfs FILE [--init CMD [ARG...]]"));
        }
        return Ok(None);
    };
    if !dir_given {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        *dir = file.with_file_name(format!(".{name}.rootfs"));
    }
    Ok(Some(crate::initramfs::InitramfsOptions {
        file,
        init,
        keep_tree: dir_given,
    }))
}

/// `--init CMD [ARG...]`: every argument left on the line.
fn init_command(p: &mut lexopt::Parser) -> Result<Vec<String>> {
    let words = p
        .raw_args()
        .map_err(usage_error)?
        .map(os_string)
        .collect::<Result<Vec<_>>>()?;
    if words.is_empty() {
        return Err(Error::new("--init needs a command")
            .hint("put --init CMD [ARG...] last on the command line"));
    }
    Ok(words)
}

fn parse_initramfs(p: &mut lexopt::Parser) -> Result<Command> {
    let (mut root, mut file, mut init) = (PathBuf::from("rootfs"), None, None);
    let mut progress = Progress::Plain;
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(INITRAMFS_HELP)),
            Short('r') | Long("rootfs") => root = p.value().map_err(usage_error)?.into(),
            Short('o') | Long("output") => {
                file = Some(PathBuf::from(p.value().map_err(usage_error)?))
            }
            Short('q') | Long("quiet") => progress = Progress::Quiet,
            Long("init") => init = Some(init_command(p)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    let file = file.ok_or_else(|| {
        Error::new("missing -o FILE").hint("usage: barge initramfs [-r DIR] -o FILE")
    })?;
    Ok(Command::Initramfs(crate::initramfs::PackOptions {
        root,
        file,
        init,
        progress,
    }))
}

/// `pull`'s `--bundle DIR`, `--rootless` and whether `-r` was given.
#[derive(Default)]
struct BundleArgs {
    dir: Option<PathBuf>,
    rootless: bool,
    rootfs: bool,
}

impl BundleArgs {
    /// With `--bundle DIR`, DIR becomes the pull's directory; `-r` and `--rootless`
    /// alone are usage errors.
    fn resolve(self, dir: &mut PathBuf) -> Result<Option<BundleOptions>> {
        match self.dir {
            Some(_) if self.rootfs => {
                Err(Error::new("--bundle and -r/--rootfs exclude each other")
                    .hint("the tree of a bundle is DIR/rootfs: give only --bundle DIR"))
            }
            Some(b) => {
                *dir = b;
                Ok(Some(BundleOptions {
                    rootless: self.rootless,
                }))
            }
            None if self.rootless => Err(Error::new("--rootless needs --bundle DIR")
                .hint("usage: barge pull IMAGE --bundle DIR --rootless")),
            None => Ok(None),
        }
    }
}

fn parse_commit(p: &mut lexopt::Parser) -> Result<Command> {
    let (mut root, mut message) = (PathBuf::from("rootfs"), None);
    let mut progress = Progress::Auto;
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(COMMIT_HELP)),
            Short('r') | Long("rootfs") => root = p.value().map_err(usage_error)?.into(),
            Short('m') | Long("message") => message = Some(string_value(p)?),
            Short('q') | Long("quiet") => progress = Progress::Quiet,
            Long("progress") => progress = progress_value(p)?,
            other => return Err(usage_error(other.unexpected())),
        }
    }
    let message = message.filter(|m| !m.trim().is_empty()).ok_or_else(|| {
        Error::new("missing commit message").hint("usage: barge commit [-r DIR] -m MESSAGE")
    })?;
    Ok(Command::Commit(CommitOptions { root, message }, progress))
}

fn parse_status(p: &mut lexopt::Parser) -> Result<Command> {
    let (mut root, mut quiet) = (PathBuf::from("rootfs"), false);
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(STATUS_HELP)),
            Short('r') | Long("rootfs") => root = p.value().map_err(usage_error)?.into(),
            Short('q') | Long("quiet") => quiet = true,
            other => return Err(usage_error(other.unexpected())),
        }
    }
    Ok(Command::Status(StatusOptions { root, quiet }))
}

fn parse_checkout(p: &mut lexopt::Parser) -> Result<Command> {
    let (mut root, mut layer, mut force, mut quiet) = (PathBuf::from("rootfs"), None, false, false);
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(CHECKOUT_HELP)),
            Short('r') | Long("rootfs") => root = p.value().map_err(usage_error)?.into(),
            Short('f') | Long("force") => force = true,
            Short('q') | Long("quiet") => quiet = true,
            Value(v) if layer.is_none() => layer = Some(os_string(v)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    let layer = layer.ok_or_else(|| {
        Error::new("missing LAYER").hint("usage: barge checkout LAYER [-r DIR] [--force]")
    })?;
    Ok(Command::Checkout(CheckoutOptions {
        root,
        layer,
        force,
        quiet,
    }))
}

fn parse_push(p: &mut lexopt::Parser) -> Result<Command> {
    let (mut name, mut dir, mut user) = (None, PathBuf::from("rootfs"), None);
    let mut progress = Progress::Auto;
    let mut password_stdin = false;
    let mut transport = TransportOptions::default();
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(PUSH_HELP)),
            Short('r') | Long("rootfs") => dir = p.value().map_err(usage_error)?.into(),
            Short('u') | Long("user") => user = Some(string_value(p)?),
            Long("password-stdin") => password_stdin = true,
            Short('q') | Long("quiet") => progress = Progress::Quiet,
            Long("progress") => progress = progress_value(p)?,
            Long(name) if TRANSPORT_OPTIONS.contains(&name) => {
                let name = name.to_string();
                transport_option(&name, p, &mut transport)?
            }
            Value(v) if name.is_none() => name = Some(os_string(v)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    let name = name
        .ok_or_else(|| Error::new("missing NAME").hint("usage: barge push NAME[:TAG] [-r DIR]"))?;
    Ok(Command::Push(PushOptions {
        name,
        dir,
        user,
        password_stdin,
        progress,
        transport,
    }))
}

fn parse_copy(p: &mut lexopt::Parser) -> Result<Command> {
    let mut names = Vec::new();
    let (mut all, mut platform, mut progress) = (false, None, Progress::Auto);
    let mut transport = TransportOptions::default();
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(COPY_HELP)),
            Long("all") | Short('a') => all = true,
            Long("platform") => platform = Some(string_value(p)?),
            Long("mirror") => transport.mirrors.push(string_value(p)?),
            Short('q') | Long("quiet") => progress = Progress::Quiet,
            Long("progress") => progress = progress_value(p)?,
            Long(name) if TRANSPORT_OPTIONS.contains(&name) => {
                let name = name.to_string();
                transport_option(&name, p, &mut transport)?
            }
            Value(v) if names.len() < 2 => names.push(os_string(v)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    let [src, dst]: [String; 2] = names
        .try_into()
        .map_err(|_| Error::new("missing SRC or DST").hint("usage: barge copy SRC DST [--all]"))?;
    Ok(Command::Copy(CopyOptions {
        src,
        dst,
        all,
        platform,
        progress,
        transport,
    }))
}

fn parse_inspect(p: &mut lexopt::Parser) -> Result<Command> {
    let (mut image, mut show, mut platform) = (None, Show::Summary, None);
    let mut transport = TransportOptions::default();
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(INSPECT_HELP)),
            Long("raw") if show == Show::Summary => show = Show::Raw,
            Long("config") if show == Show::Summary => show = Show::Config,
            Long("raw") | Long("config") => {
                return Err(
                    Error::new("--raw and --config exclude each other").hint("give one of them")
                )
            }
            Long("platform") => platform = Some(string_value(p)?),
            Long("mirror") => transport.mirrors.push(string_value(p)?),
            Long(name) if TRANSPORT_OPTIONS.contains(&name) => {
                let name = name.to_string();
                transport_option(&name, p, &mut transport)?
            }
            Value(v) if image.is_none() => image = Some(os_string(v)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    let image = image.ok_or_else(|| {
        Error::new("missing IMAGE").hint("usage: barge inspect IMAGE [--raw | --config]")
    })?;
    Ok(Command::Inspect(InspectOptions {
        image,
        show,
        platform,
        transport,
    }))
}

fn parse_login(p: &mut lexopt::Parser) -> Result<Command> {
    let (mut registry, mut user, mut password_stdin) = (None, None, false);
    let mut transport = TransportOptions::default();
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(LOGIN_HELP)),
            Short('u') | Long("user") | Long("username") => user = Some(string_value(p)?),
            Long("password-stdin") => password_stdin = true,
            Long(name) if TRANSPORT_OPTIONS.contains(&name) => {
                let name = name.to_string();
                transport_option(&name, p, &mut transport)?
            }
            Value(v) if registry.is_none() => registry = Some(os_string(v)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    Ok(Command::Login(LoginOptions {
        registry,
        user,
        password_stdin,
        transport,
    }))
}

fn parse_logout(p: &mut lexopt::Parser) -> Result<Command> {
    let mut registry = None;
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(LOGOUT_HELP)),
            Value(v) if registry.is_none() => registry = Some(os_string(v)?),
            other => return Err(usage_error(other.unexpected())),
        }
    }
    Ok(Command::Logout(registry))
}

/// `barge help [COMMAND]`: the overview, or that command's `--help`.
fn parse_help(p: &mut lexopt::Parser) -> Result<Command> {
    let Some(arg) = p.next().map_err(usage_error)? else {
        return Ok(Command::Help(USAGE));
    };
    let topic = match arg {
        Value(v) => os_string(v)?,
        other => return Err(usage_error(other.unexpected())),
    };
    if let Some(extra) = p.next().map_err(usage_error)? {
        return Err(usage_error(extra.unexpected()));
    }
    match topic.as_str() {
        "pull" => Ok(Command::Help(PULL_HELP)),
        "commit" => Ok(Command::Help(COMMIT_HELP)),
        "status" => Ok(Command::Help(STATUS_HELP)),
        "checkout" => Ok(Command::Help(CHECKOUT_HELP)),
        "push" => Ok(Command::Help(PUSH_HELP)),
        "copy" => Ok(Command::Help(COPY_HELP)),
        "inspect" => Ok(Command::Help(INSPECT_HELP)),
        "login" => Ok(Command::Help(LOGIN_HELP)),
        "logout" => Ok(Command::Help(LOGOUT_HELP)),
        "initramfs" => Ok(Command::Help(INITRAMFS_HELP)),
        "help" => Ok(Command::Help(USAGE)),
        "version" => Ok(Command::Help(
            "Usage: barge version\n\nPrints barge's version.",
        )),
        other => Err(Error::new(format!("no help for unknown command {other:?}"))
            .hint("run `barge help` for the list of commands")),
    }
}

/// The options [`transport_option`] takes.
const TRANSPORT_OPTIONS: &[&str] = &[
    "ca-cert",
    "insecure",
    "low-speed-limit",
    "low-speed-time",
    "connections",
];

/// `--ca-cert`, `--insecure` and the low-speed rule, shared by every command that talks to a registry.
fn transport_option(name: &str, p: &mut lexopt::Parser, t: &mut TransportOptions) -> Result<()> {
    match name {
        "ca-cert" => t.ca_files.push(p.value().map_err(usage_error)?.into()),
        "low-speed-limit" => t.low_speed.limit = number_value(p, name)?,
        "low-speed-time" => {
            t.low_speed.time = std::time::Duration::from_secs(number_value(p, name)?)
        }
        "connections" => t.connections = connections_value(p)?,
        _ => t.insecure.push(string_value(p)?),
    }
    Ok(())
}

/// `--progress=auto|tty|plain|quiet` (`-q` is `quiet`).
fn progress_value(p: &mut lexopt::Parser) -> Result<Progress> {
    Progress::parse(&string_value(p)?)
}

/// `--connections N|auto`.
fn connections_value(p: &mut lexopt::Parser) -> Result<Connections> {
    let v = string_value(p)?;
    match v.trim() {
        "auto" => Ok(Connections::Auto),
        n => match n.parse::<usize>() {
            Ok(n) if (1..=16).contains(&n) => Ok(Connections::Fixed(n)),
            _ => Err(
                Error::new(format!("--connections takes 1 to 16 or auto, not {v:?}"))
                    .hint("run with --help for usage"),
            ),
        },
    }
}

/// A whole number (at most 10^9) for option `--name`.
fn number_value(p: &mut lexopt::Parser, name: &str) -> Result<u64> {
    let v = string_value(p)?;
    match v.trim().parse::<u64>() {
        Ok(n) if n <= 1_000_000_000 => Ok(n),
        _ => Err(
            Error::new(format!("--{name} takes a whole number, not {v:?}"))
                .hint("run with --help for usage"),
        ),
    }
}

fn string_value(p: &mut lexopt::Parser) -> Result<String> {
    os_string(p.value().map_err(usage_error)?)
}

fn os_string(v: std::ffi::OsString) -> Result<String> {
    v.into_string()
        .map_err(|v| Error::new(format!("argument {v:?} is not valid UTF-8")))
}

fn usage_error(e: lexopt::Error) -> Error {
    Error::new(e.to_string()).hint("run with --help for usage")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<std::ffi::OsString> {
        s.split_whitespace().map(Into::into).collect()
    }

    #[test]
    fn pull_defaults_and_options() {
        let Command::Pull(p) = parse(args("pull debian:bookworm")).unwrap() else {
            panic!()
        };
        assert_eq!(p.dir, PathBuf::from("rootfs"));
        assert!(!p.git && p.progress == Progress::Auto);
        let Command::Pull(p) = parse(args(
            "pull -r d -g -q --platform linux/arm64 -u a:b --ca-cert c.pem --insecure h:5 x",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.dir.to_str(), p.git, p.progress),
            (Some("d"), true, Progress::Quiet)
        );
        assert_eq!(p.platform.as_deref(), Some("linux/arm64"));
        assert_eq!(p.transport.insecure, vec!["h:5".to_string()]);
        assert_eq!(p.image, "x");
        assert!(!p.password_stdin);
    }

    #[test]
    fn pull_takes_mirrors_in_order_and_push_takes_none() {
        let Command::Pull(p) = parse(args("pull x --mirror a:5 --mirror http://b.lan")).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.transport.mirrors, ["a:5", "http://b.lan"]);
        assert!(parse(args("push h/x:1 --mirror a:5")).is_err());
        assert!(parse(args("pull x --mirror")).is_err());
    }

    #[test]
    fn progress_option_on_every_command() {
        for (line, want) in [
            ("pull x --progress=plain", Progress::Plain),
            ("pull x --progress tty", Progress::Tty),
            ("pull x --progress=plain -q", Progress::Quiet),
            ("push h/x:1 --progress=quiet", Progress::Quiet),
            ("push h/x:1 -q --progress=auto", Progress::Auto),
        ] {
            let got = match parse(args(line)).unwrap() {
                Command::Pull(p) => p.progress,
                Command::Push(p) => p.progress,
                _ => panic!("{line}"),
            };
            assert_eq!(got, want, "{line}");
        }
        let Command::Commit(_, p) = parse(args("commit -m m --progress=quiet")).unwrap() else {
            panic!()
        };
        assert_eq!(p, Progress::Quiet);
        let Command::Commit(_, p) = parse(args("commit -m m --progress=plain")).unwrap() else {
            panic!()
        };
        assert_eq!(p, Progress::Plain);
        let e = parse(args("pull x --progress=fancy")).err().unwrap();
        assert!(e.to_string().contains("fancy"), "{e}");
    }

    #[test]
    fn password_stdin_for_pull_and_push() {
        let Command::Pull(p) = parse(args("pull x -u bob --password-stdin")).unwrap() else {
            panic!()
        };
        assert_eq!((p.user.as_deref(), p.password_stdin), (Some("bob"), true));
        let Command::Push(p) = parse(args("push h/x:1 --password-stdin -u bob")).unwrap() else {
            panic!()
        };
        assert_eq!((p.user.as_deref(), p.password_stdin), (Some("bob"), true));
    }

    fn help_text(line: &str) -> &'static str {
        match parse(args(line)) {
            Ok(Command::Help(t)) => t,
            _ => panic!("{line}: not help"),
        }
    }

    #[test]
    fn help_and_version_as_commands() {
        for (cmd, text) in [
            ("pull", PULL_HELP),
            ("commit", COMMIT_HELP),
            ("status", STATUS_HELP),
            ("checkout", CHECKOUT_HELP),
            ("push", PUSH_HELP),
            ("login", LOGIN_HELP),
            ("logout", LOGOUT_HELP),
        ] {
            assert_eq!(help_text(&format!("help {cmd}")), text, "{cmd}");
            assert_eq!(help_text(&format!("{cmd} --help")), text, "{cmd}");
        }
        assert_eq!(help_text("help"), USAGE);
        assert!(matches!(parse(args("version")), Ok(Command::Version)));
        assert!(matches!(parse(args("--version")), Ok(Command::Version)));
        assert!(parse(args("help frobnicate")).is_err());
        assert!(parse(args("help pull push")).is_err());
    }

    #[test]
    fn connections_option_is_bounded() {
        let Command::Pull(p) = parse(args("pull x")).unwrap() else {
            panic!()
        };
        assert_eq!(p.transport.connections, Connections::Default);
        let Command::Pull(p) = parse(args("pull x --connections 1")).unwrap() else {
            panic!()
        };
        assert_eq!(p.transport.connections, Connections::Fixed(1));
        let Command::Push(p) = parse(args("push x --connections 16")).unwrap() else {
            panic!()
        };
        assert_eq!(p.transport.connections, Connections::Fixed(16));
        let Command::Pull(p) = parse(args("pull x --connections auto")).unwrap() else {
            panic!()
        };
        assert_eq!(p.transport.connections, Connections::Auto);
        for bad in ["0", "17", "-1", "x", "Auto"] {
            assert!(
                parse(args(&format!("pull x --connections {bad}"))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn low_speed_options_for_every_registry_command() {
        let Command::Pull(p) = parse(args("pull x")).unwrap() else {
            panic!()
        };
        assert_eq!(p.transport.low_speed, crate::http::LowSpeed::DEFAULT);
        let Command::Push(p) =
            parse(args("push x --low-speed-limit 0 --low-speed-time 300")).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.transport.low_speed.limit, 0);
        assert_eq!(p.transport.low_speed.time.as_secs(), 300);
        let Command::Login(l) = parse(args("login h --low-speed-time 5")).unwrap() else {
            panic!()
        };
        assert_eq!(l.transport.low_speed.time.as_secs(), 5);
        assert!(parse(args("pull x --low-speed-limit fast")).is_err());
        assert!(parse(args("pull x --low-speed-time -1")).is_err());
    }

    #[test]
    fn bundle_options() {
        let Command::Pull(p) = parse(args("pull x --bundle b -g")).unwrap() else {
            panic!()
        };
        assert_eq!(p.dir, PathBuf::from("b"));
        assert_eq!(p.bundle, Some(BundleOptions { rootless: false }));
        assert!(p.git);
        let Command::Pull(p) = parse(args("pull x --rootless --bundle b")).unwrap() else {
            panic!()
        };
        assert_eq!(p.bundle, Some(BundleOptions { rootless: true }));
        let Command::Pull(p) = parse(args("pull x -r d")).unwrap() else {
            panic!()
        };
        assert_eq!(p.bundle, None);
        for bad in [
            "pull x --bundle b -r d",
            "pull x -r d --bundle b",
            "pull x --rootless",
        ] {
            let e = parse(args(bad)).err().unwrap_or_else(|| panic!("{bad}"));
            assert!(e.hint_text().is_some(), "{bad}: {e}");
        }
    }

    #[test]
    fn copy_and_inspect_options() {
        let Command::Copy(c) = parse(args("copy a oci:/x:y --all -q")).unwrap() else {
            panic!("not copy")
        };
        assert_eq!(
            (c.src.as_str(), c.dst.as_str(), c.all),
            ("a", "oci:/x:y", true)
        );
        assert_eq!(c.progress, Progress::Quiet);
        assert!(parse(args("copy a")).is_err());
        assert!(parse(args("copy a b c")).is_err());
        let Command::Inspect(i) = parse(args("inspect x --raw")).unwrap() else {
            panic!("not inspect")
        };
        assert_eq!(i.show, Show::Raw);
        assert!(parse(args("inspect x --raw --config")).is_err());
        assert!(parse(args("inspect")).is_err());
    }

    #[test]
    fn bad_command_lines_are_errors() {
        assert!(parse(args("pull")).is_err());
        assert!(parse(args("pull a b")).is_err());
        assert!(parse(args("pull --bogus a")).is_err());
        assert!(parse(args("frobnicate")).is_err());
    }

    #[test]
    fn initramfs_options_and_init_takes_the_rest_of_the_line() {
        let Command::Pull(p) = parse(args(
            "pull x --initramfs out/i.cpio.gz --init /bin/sh -c -q",
        ))
        .unwrap() else {
            panic!("not a pull")
        };
        let ir = p.initramfs.unwrap();
        assert_eq!(ir.init.unwrap(), vec!["/bin/sh", "-c", "-q"]);
        assert!(!ir.keep_tree);
        assert_eq!(p.dir, PathBuf::from("out/.i.cpio.gz.rootfs"));
        assert_eq!(
            p.progress,
            Progress::Auto,
            "-q after --init is the command's"
        );
        let Command::Pull(p) = parse(args("pull x -r t --initramfs i.cpio")).unwrap() else {
            panic!("not a pull")
        };
        assert!(p.initramfs.unwrap().keep_tree);
        assert_eq!(p.dir, PathBuf::from("t"));
        assert!(parse(args("pull x --init /bin/sh")).is_err());
        assert!(parse(args("pull x --initramfs i.cpio --init")).is_err());
        let Command::Initramfs(o) = parse(args("initramfs -o f.cpio --init a b")).unwrap() else {
            panic!("not initramfs")
        };
        assert_eq!(
            (o.root, o.file),
            (PathBuf::from("rootfs"), PathBuf::from("f.cpio"))
        );
        assert_eq!(o.init.unwrap(), vec!["a", "b"]);
        assert!(parse(args("initramfs -r t")).is_err());
    }
}
