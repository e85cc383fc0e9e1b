//! The OCI runtime spec (`config.json`) of a bundle, made from the image config as
//! umoci `unpack` maps it (image-spec's conversion.md) onto the defaults of
//! `runc spec` (runc 1.1), or of `runc spec --rootless` for [`Ids`] of a user.
//!
//! Mapping: args = Entrypoint + Cmd; env = runc's PATH and TERM, then the image's
//! Env (same name replaces), then HOME from the user's passwd entry unless set;
//! cwd = WorkingDir or `/`; user = [`ExecUser`]; each of Volumes a tmpfs mount;
//! annotations = `org.opencontainers.image.{os,architecture,variant,author,created,
//! stopSignal,exposedPorts}`, then Labels. `terminal` is false (a bundle is run
//! from scripts; runc needs a console socket otherwise), `root` is `rootfs`, writable.

use super::passwd::ExecUser;
use crate::error::{Context, Error, Result};
use crate::json::{self, JsonValue};

/// `ociVersion` written (what runc 1.1 `spec` writes).
pub const OCI_VERSION: &str = "1.0.2-dev";
/// The PATH every container gets unless the image sets one (runc's, Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The container's hostname.
pub const HOSTNAME: &str = "barge";
/// Capabilities of `runc spec` (bounding, effective, permitted, ambient).
const CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
const MASKED: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
const READONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The host user a rootless container's root is mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

/// What the process fields come from: the image config's `config` object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// The config's `User`, as written.
    pub user: String,
}

/// Reads args, env (without HOME: that needs the user), cwd and User from a config.
pub fn process(config: &JsonValue) -> Result<Process> {
    let mut args = json::opt_str_array(config, "config.Entrypoint")?;
    args.extend(json::opt_str_array(config, "config.Cmd")?);
    let mut env = vec![format!("PATH={DEFAULT_PATH}"), "TERM=xterm".to_string()];
    for entry in json::opt_str_array(config, "config.Env")? {
        match entry.split_once('=') {
            Some((name, _)) if !name.is_empty() => set_env(&mut env, name, &entry, true),
            _ => {
                return Err(Error::new(format!(
                    "image config Env entry {entry:?} is not NAME=VALUE"
                ))
                .hint("fix the image's Env (e.g. `umoci config --config.env`)"))
            }
        }
    }
    let cwd = json::opt_str(config, "config.WorkingDir")?
        .filter(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string();
    let user = json::opt_str(config, "config.User")?
        .unwrap_or_default()
        .to_string();
    Ok(Process {
        args,
        env,
        cwd,
        user,
    })
}

/// Sets `entry` (`name=value`) in `env`: replaces the first of that name if `clobber`,
/// else adds it only when absent.
fn set_env(env: &mut Vec<String>, name: &str, entry: &str, clobber: bool) {
    let prefix = format!("{name}=");
    match env.iter_mut().find(|e| e.starts_with(&prefix)) {
        Some(old) if clobber => *old = entry.to_string(),
        Some(_) => {}
        None => env.push(entry.to_string()),
    }
}

/// The whole runtime spec; `rootless` maps container root to that host user.
pub fn build(config: &JsonValue, user: &ExecUser, rootless: Option<Ids>) -> Result<JsonValue> {
    let mut p = process(config).context("image config")?;
    if let Some(home) = &user.home {
        set_env(&mut p.env, "HOME", &format!("HOME={home}"), false);
    }
    let mut mounts = default_mounts(rootless.is_some());
    for v in volumes(config)? {
        mounts.push(mount(
            &v,
            "tmpfs",
            "none",
            &["rw", "nosuid", "nodev", "noexec", "relatime"],
        ));
    }
    Ok(json::object([
        ("ociVersion", json::string(OCI_VERSION)),
        ("process", process_json(&p, user, rootless.is_some())),
        (
            "root",
            json::object([
                ("path", json::string("rootfs")),
                ("readonly", JsonValue::Boolean(false)),
            ]),
        ),
        ("hostname", json::string(HOSTNAME)),
        ("mounts", JsonValue::Array(mounts)),
        ("linux", linux_json(rootless)),
        ("annotations", annotations(config)?),
    ]))
}

fn num(n: u32) -> JsonValue {
    JsonValue::Number(f64::from(n))
}

fn strings<S: AsRef<str>>(items: &[S]) -> JsonValue {
    JsonValue::Array(items.iter().map(|s| json::string(s.as_ref())).collect())
}

fn process_json(p: &Process, user: &ExecUser, rootless: bool) -> JsonValue {
    let mut u = vec![("uid", num(user.uid)), ("gid", num(user.gid))];
    // A rootless container maps one group: setgroups(2) is not allowed there.
    if !rootless && !user.additional_gids.is_empty() {
        let gids = user.additional_gids.iter().map(|&g| num(g)).collect();
        u.push(("additionalGids", JsonValue::Array(gids)));
    }
    let caps = strings(&CAPS);
    json::object([
        ("terminal", JsonValue::Boolean(false)),
        ("user", json::object(u)),
        ("args", strings(&p.args)),
        ("env", strings(&p.env)),
        ("cwd", json::string(&p.cwd)),
        (
            "capabilities",
            json::object(
                ["bounding", "effective", "permitted", "ambient"].map(|k| (k, caps.clone())),
            ),
        ),
        (
            "rlimits",
            JsonValue::Array(vec![json::object([
                ("type", json::string("RLIMIT_NOFILE")),
                ("hard", num(1024)),
                ("soft", num(1024)),
            ])]),
        ),
        ("noNewPrivileges", JsonValue::Boolean(true)),
    ])
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> JsonValue {
    let mut m = vec![
        ("destination", json::string(dest)),
        ("type", json::string(kind)),
        ("source", json::string(source)),
    ];
    if !options.is_empty() {
        m.push(("options", strings(options)));
    }
    json::object(m)
}

/// `runc spec`'s mounts; rootless: no `gid=5` on devpts, `/sys` bind-mounted.
fn default_mounts(rootless: bool) -> Vec<JsonValue> {
    let devpts: &[&str] = if rootless {
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ]
    } else {
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]
    };
    let sys = if rootless {
        mount(
            "/sys",
            "none",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )
    } else {
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )
    };
    vec![
        mount("/proc", "proc", "proc", &[]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount("/dev/pts", "devpts", "devpts", devpts),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        sys,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// `runc spec`'s `linux` section; rootless: a user namespace mapping container root
/// to `ids`, no network namespace, no device cgroup rules.
fn linux_json(rootless: Option<Ids>) -> JsonValue {
    let ns = |t: &str| json::object([("type", json::string(t))]);
    let mut fields = vec![
        ("maskedPaths", strings(&MASKED)),
        ("readonlyPaths", strings(&READONLY)),
    ];
    match rootless {
        None => {
            let namespaces = ["pid", "network", "ipc", "uts", "mount"].map(ns);
            fields.push(("namespaces", JsonValue::Array(namespaces.to_vec())));
            let deny_all = json::object([
                ("allow", JsonValue::Boolean(false)),
                ("access", json::string("rwm")),
            ]);
            fields.push((
                "resources",
                json::object([("devices", JsonValue::Array(vec![deny_all]))]),
            ));
        }
        Some(ids) => {
            let namespaces = ["pid", "ipc", "uts", "mount", "user"].map(ns);
            fields.push(("namespaces", JsonValue::Array(namespaces.to_vec())));
            let map = |host: u32| {
                JsonValue::Array(vec![json::object([
                    ("containerID", num(0)),
                    ("hostID", num(host)),
                    ("size", num(1)),
                ])])
            };
            fields.push(("uidMappings", map(ids.uid)));
            fields.push(("gidMappings", map(ids.gid)));
        }
    }
    json::object(fields)
}

/// The config's Volumes (an object whose keys are paths), sorted.
fn volumes(config: &JsonValue) -> Result<Vec<String>> {
    let mut v: Vec<String> = json::opt_object(config, "config.Volumes")
        .context("image config")?
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    v.sort();
    Ok(v)
}

/// umoci's `org.opencontainers.image.*` annotations (empty ones left out), then Labels.
fn annotations(config: &JsonValue) -> Result<JsonValue> {
    let s = |path: &str| json::opt_str(config, path).context("image config");
    let mut ports: Vec<String> = json::opt_object(config, "config.ExposedPorts")
        .context("image config")?
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    ports.sort();
    let mut out = Vec::new();
    for (key, value) in [
        ("os", s("os")?.map(str::to_string)),
        ("architecture", s("architecture")?.map(str::to_string)),
        ("variant", s("variant")?.map(str::to_string)),
        ("author", s("author")?.map(str::to_string)),
        ("created", s("created")?.map(str::to_string)),
        ("stopSignal", s("config.StopSignal")?.map(str::to_string)),
        ("exposedPorts", Some(ports.join(","))),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push((format!("org.opencontainers.image.{key}"), json::string(v)));
        }
    }
    for (k, v) in json::opt_str_map(config, "config.Labels").context("image config")? {
        out.push((k, json::string(v)));
    }
    Ok(json::object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> JsonValue {
        json::parse(text.as_bytes(), "test").unwrap()
    }

    #[test]
    fn process_fields_as_umoci_maps_them() {
        let c = config(
            r#"{"config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],
            "Env":["PATH=/bin","A=1","A=2","EMPTY="],"WorkingDir":"/srv","User":"app"}}"#,
        );
        let p = process(&c).unwrap();
        assert_eq!(p.args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(p.env, ["PATH=/bin", "TERM=xterm", "A=2", "EMPTY="]);
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/srv", "app"));
        // Nothing set: runc's PATH, cwd /, no args (runc refuses to run that).
        let p = process(&config(r#"{"config":{"Cmd":null}}"#)).unwrap();
        assert!(p.args.is_empty());
        assert_eq!(p.env[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/", ""));
        assert_eq!(process(&config("{}")).unwrap(), p);
        for bad in [r#"["NOEQUALS"]"#, r#"["=x"]"#, r#"[1]"#] {
            let c = config(&format!(r#"{{"config":{{"Env":{bad}}}}}"#));
            assert!(process(&c).is_err(), "{bad}");
        }
    }

    #[test]
    fn home_user_and_rootless() {
        let c = config(
            r#"{"os":"linux","architecture":"amd64","config":{"Cmd":["x"],
            "Volumes":{"/data":{}},"Labels":{"k":"v","org.opencontainers.image.os":"mine"},
            "ExposedPorts":{"80/tcp":{},"443/tcp":{}}}}"#,
        );
        let user = ExecUser {
            uid: 1000,
            gid: 1001,
            additional_gids: vec![10],
            home: Some("/home/app".into()),
        };
        let s = build(&c, &user, None).unwrap();
        let text = json::to_string_sorted(&s);
        assert!(text.contains(r#""HOME=/home/app""#), "{text}");
        assert!(text.contains(r#""additionalGids":[10]"#), "{text}");
        assert!(text.contains(r#""gid=5""#) && text.contains(r#""type":"network""#));
        assert!(text.contains(r#""destination":"/data","options":["rw","#));
        assert!(text.contains(r#""org.opencontainers.image.exposedPorts":"443/tcp,80/tcp""#));
        assert!(
            text.contains(r#""org.opencontainers.image.os":"mine""#),
            "{text}"
        );
        assert!(text.contains(r#""k":"v""#) && text.contains(r#""terminal":false"#));
        let s = build(&c, &user, Some(Ids { uid: 7, gid: 8 })).unwrap();
        let text = json::to_string_sorted(&s);
        assert!(!text.contains("additionalGids") && !text.contains("gid=5"));
        assert!(!text.contains(r#""type":"network""#) && !text.contains("resources"));
        assert!(text.contains(r#""uidMappings":[{"containerID":0,"hostID":7,"size":1}]"#));
        assert!(text.contains(r#""gidMappings":[{"containerID":0,"hostID":8,"size":1}]"#));
        assert!(text.contains(r#""type":"user""#) && text.contains(r#""rbind""#));
        // An Env HOME wins over passwd's.
        let c = config(r#"{"config":{"Env":["HOME=/x"]}}"#);
        let text = json::to_string_sorted(&build(&c, &user, None).unwrap());
        assert!(text.contains(r#""HOME=/x""#) && !text.contains("/home/app"));
    }
}
