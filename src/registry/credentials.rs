//! Where credentials come from: -u, Docker's config.json (its `auths` or a credential
//! helper), podman's auth.json.
//!
//! Lookup order: `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`), then
//! `$REGISTRY_AUTH_FILE`, then `$XDG_RUNTIME_DIR/containers/auth.json`. In each file, as
//! Docker decides: `credHelpers[registry]` names a helper, else `credsStore` does, else the
//! `auths` object maps a registry key to `{"auth": base64("user:pass")}` or
//! `{"username": …, "password": …}`. A helper (`docker-credential-NAME`, see [`helper`])
//! is asked with the server URL: `https://index.docker.io/v1/` for Docker Hub, else
//! `host[:port]`. Keys match exactly, then after dropping the scheme and any path (Docker
//! writes Docker Hub as `https://index.docker.io/v1/`). `auths` entries holding only an
//! `identitytoken` (or nothing, as beside a credential helper) are skipped.
//!
//! `save`/`forget` (and `store`/`remove` for the file) serve `barge login`/`logout`: through
//! the helper when the config names one, else rewriting the file, keeping every other key.
//! Secrets never appear in errors or `Debug` output.

mod helper;
pub mod prompt;

use crate::error::{Context, Error, Result};
use crate::http::{base64_decode, base64_encode};
use crate::json::{self, JsonValue};
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use helper::Helper;

/// Auth files bigger than this are refused (real ones are a few KiB).
const MAX_AUTH_FILE: u64 = 16 << 20;

/// A user name and its password or token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Parses `-u USER:PASS` (split at the first ':'; the password may contain ':').
pub fn from_user_arg(s: &str) -> Result<Credentials> {
    let Some((user, secret)) = s.split_once(':') else {
        return Err(Error::new("invalid --user value: expected USER:PASSWORD")
            .hint("write -u USER:PASSWORD"));
    };
    if user.is_empty() {
        return Err(Error::new("invalid --user value: the user name is empty")
            .hint("write -u USER:PASSWORD"));
    }
    Ok(Credentials {
        user: user.to_string(),
        secret: secret.to_string(),
    })
}

/// Credentials for pull and push: `-u USER:PASS`; `-u USER` with the password from stdin
/// (`--password-stdin`) or the terminal; else the auth files and helpers ([`lookup`]).
pub fn resolve(
    user: Option<&str>,
    password_stdin: bool,
    keys: &[String],
) -> Result<Option<Credentials>> {
    match user {
        None if password_stdin => {
            Err(Error::new("--password-stdin needs a user name").hint("add -u USER"))
        }
        None => lookup(keys),
        Some(u) => with_password(u, password_stdin).map(Some),
    }
}

/// `-u USER:PASS` as given; `-u USER` completed from stdin (`password_stdin`) or, without
/// echo, from the terminal.
pub fn with_password(user: &str, password_stdin: bool) -> Result<Credentials> {
    if user.contains(':') {
        if password_stdin {
            return Err(Error::new(
                "two passwords: one in -u USER:PASS, one from --password-stdin",
            )
            .hint("give -u USER with --password-stdin"));
        }
        return from_user_arg(user);
    }
    if user.is_empty() {
        return Err(Error::new("invalid --user value: the user name is empty")
            .hint("write -u USER or -u USER:PASSWORD"));
    }
    let secret = if password_stdin {
        prompt::password_from_stdin()?
    } else if prompt::stdin_is_terminal() {
        prompt::ask("Password: ", false)?
    } else {
        return Err(Error::new(format!("no password for {user}"))
            .hint("give -u USER:PASS or --password-stdin"));
    };
    if secret.is_empty() {
        return Err(Error::new(format!("empty password for {user}"))
            .hint("give -u USER:PASS or --password-stdin"));
    }
    Ok(Credentials {
        user: user.to_string(),
        secret,
    })
}

/// Looks `keys` up in the usual auth files (see the module comment), first match wins.
pub fn lookup(keys: &[String]) -> Result<Option<Credentials>> {
    lookup_in(&auth_files(), keys)
}

/// The files [`lookup`] searches, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let mut files = vec![default_store_path()];
    if let Some(f) = env_path("REGISTRY_AUTH_FILE") {
        files.push(f);
    }
    if let Some(d) = env_path("XDG_RUNTIME_DIR") {
        files.push(d.join("containers").join("auth.json"));
    }
    files
}

/// Where `barge login` stores credentials: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn default_store_path() -> PathBuf {
    match env_path("DOCKER_CONFIG") {
        Some(d) => d.join("config.json"),
        None => home_dir().join(".docker").join("config.json"),
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$HOME`, else the passwd entry's home, else `/`.
fn home_dir() -> PathBuf {
    if let Some(h) = env_path("HOME") {
        return h;
    }
    // SAFETY: getpwuid returns a pointer to static storage or null; barge is single-threaded
    // and we copy the string out before any other passwd call.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_dir.is_null() {
            let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
            use std::os::unix::ffi::OsStrExt;
            return PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes()));
        }
    }
    PathBuf::from("/")
}

/// [`lookup`] over explicit files: missing files are skipped, malformed ones are errors.
/// `keys[0]` is the server URL a helper is asked for.
pub fn lookup_in(files: &[PathBuf], keys: &[String]) -> Result<Option<Credentials>> {
    let Some(server_url) = keys.first() else {
        return Ok(None);
    };
    for file in files {
        let Some(doc) = read_auth_file(file)? else {
            continue;
        };
        let what = || format!("credentials file {}", file.display());
        let found = match configured_helper(&doc, file, keys).with_context(what)? {
            Some(h) => h.get(server_url)?.map(|a| Credentials {
                user: a.user,
                secret: a.secret,
            }),
            None => find_in_doc(&doc, keys).with_context(what)?,
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The helper that holds the credentials for `keys` in one config file, as Docker picks
/// it: `credHelpers[registry]` (where an empty name means the file itself), else
/// `credsStore` (empty: none); `None` means the file's `auths`.
fn configured_helper(doc: &JsonValue, file: &Path, keys: &[String]) -> Result<Option<Helper>> {
    if let Some(helpers) = json::opt_object(doc, "credHelpers")? {
        if let Some((name, value)) = matching_entries(helpers, keys).into_iter().next() {
            let setting = format!("credHelpers.{name:?}");
            let JsonValue::String(h) = value else {
                return Err(Error::new(format!("field {setting} must be a string")));
            };
            return new_helper(h, setting, file);
        }
    }
    let store = json::opt_str(doc, "credsStore")?.unwrap_or_default();
    new_helper(store, "credsStore".to_string(), file)
}

/// A helper named `name` by `setting` of `file`; an empty name is none.
fn new_helper(name: &str, setting: String, file: &Path) -> Result<Option<Helper>> {
    if name.is_empty() {
        return Ok(None);
    }
    if name.contains(['/', '\0']) || name.chars().any(char::is_control) {
        return Err(
            Error::new(format!("field {setting} is {name:?}, not a helper name"))
                .hint("write the part after `docker-credential-`, e.g. \"pass\""),
        );
    }
    Ok(Some(Helper {
        name: name.to_string(),
        setting,
        config: file.to_path_buf(),
        timeout: helper::TIMEOUT,
        path: None,
    }))
}

/// The helper `barge login`/`logout` use for `keys` with the config at `path`, if any.
pub fn helper_for(path: &Path, keys: &[String]) -> Result<Option<Helper>> {
    let what = || format!("credentials file {}", path.display());
    match read_auth_file(path)? {
        Some(doc) => configured_helper(&doc, path, keys).with_context(what),
        None => Ok(None),
    }
}

/// Stores `creds` for `keys[0]` as Docker's login does: through the configured helper
/// (leaving an empty `auths` entry, as Docker writes), else in the file's `auths`.
/// Returns where they went.
pub fn save(path: &Path, keys: &[String], creds: &Credentials) -> Result<String> {
    let Some(key) = keys.first() else {
        return Err(Error::new("no registry to store credentials for"));
    };
    match helper_for(path, keys)? {
        Some(h) => {
            h.store(key, &creds.user, &creds.secret)?;
            put_entry(path, key, json::object::<&str>([]))?;
            Ok(h.program())
        }
        None => {
            store(path, key, creds)?;
            Ok(path.display().to_string())
        }
    }
}

/// Erases the credentials for `keys[0]`: from the configured helper, and the `auths`
/// entry of the file. Returns where something was removed (empty: nothing was stored).
pub fn forget(path: &Path, keys: &[String]) -> Result<Vec<String>> {
    let Some(key) = keys.first() else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    if let Some(h) = helper_for(path, keys)? {
        if h.erase(key)? {
            removed.push(h.program());
        }
    }
    if remove(path, key)? {
        removed.push(path.display().to_string());
    }
    Ok(removed)
}

/// Reads and parses an auth file; `None` if it does not exist.
fn read_auth_file(path: &Path) -> Result<Option<JsonValue>> {
    let what = || format!("credentials file {}", path.display());
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::from(e).context(what())),
    };
    if !meta.is_file() || meta.len() > MAX_AUTH_FILE {
        return Err(Error::new(format!(
            "{}: not a regular file of reasonable size",
            what()
        )));
    }
    let bytes = fs::read(path).with_context(what)?;
    parse_auth_file(&bytes, &what()).map(Some)
}

/// Parses the content of an auth file; `what` names it in errors.
fn parse_auth_file(bytes: &[u8], what: &str) -> Result<JsonValue> {
    let doc = json::parse(bytes, what)?;
    json::as_object(&doc, what)?;
    Ok(doc)
}

/// [`lookup_in`] over the content of one auth file (the fuzz target's entry point).
#[cfg(feature = "fuzzing")]
pub fn lookup_in_bytes(bytes: &[u8], keys: &[String]) -> Result<Option<Credentials>> {
    find_in_doc(&parse_auth_file(bytes, "credentials file")?, keys)
}

/// Drops `http://`/`https://` and anything from the first `/`; lowercases.
fn normalize_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or_default().to_ascii_lowercase()
}

/// Entries of `auths` that match `keys`: exact matches in key order, then normalised ones.
fn matching_entries<'a>(
    auths: &'a HashMap<String, JsonValue>,
    keys: &[String],
) -> Vec<(&'a str, &'a JsonValue)> {
    let mut out: Vec<(&str, &JsonValue)> = keys
        .iter()
        .filter_map(|k| auths.get_key_value(k.as_str()))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let mut names: Vec<&String> = auths.keys().collect();
    names.sort();
    for key in keys {
        let want = normalize_key(key);
        for name in &names {
            let already = out.iter().any(|(n, _)| n == name);
            if !already && normalize_key(name) == want {
                if let Some(v) = auths.get(*name) {
                    out.push((name.as_str(), v));
                }
            }
        }
    }
    out
}

fn find_in_doc(doc: &JsonValue, keys: &[String]) -> Result<Option<Credentials>> {
    let Some(auths) = json::opt_object(doc, "auths")? else {
        return Ok(None);
    };
    for (name, entry) in matching_entries(auths, keys) {
        if let Some(c) = entry_credentials(entry).with_context(|| format!("auths.{name:?}"))? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Credentials from one `auths` entry; `None` when it holds none barge can use.
fn entry_credentials(entry: &JsonValue) -> Result<Option<Credentials>> {
    json::as_object(entry, "entry")?;
    if let Some(auth) = json::opt_str(entry, "auth")?.filter(|a| !a.trim().is_empty()) {
        let bad = || Error::new("field \"auth\" is not base64 of USER:PASSWORD");
        let decoded = base64_decode(auth.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, secret) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            user: user.to_string(),
            secret: secret.trim_end_matches(['\n', '\r']).to_string(),
        }));
    }
    let user = json::opt_str(entry, "username")?.unwrap_or_default();
    let secret = json::opt_str(entry, "password")?.unwrap_or_default();
    if !user.is_empty() && !secret.is_empty() {
        return Ok(Some(Credentials {
            user: user.to_string(),
            secret: secret.to_string(),
        }));
    }
    Ok(None) // identitytoken only, or a credential helper's empty entry
}

/// Stores `creds` under `auths.<key>` in the file at `path` (created if missing), keeping
/// everything else in it; written atomically with mode 0600.
pub fn store(path: &Path, key: &str, creds: &Credentials) -> Result<()> {
    let encoded = base64_encode(format!("{}:{}", creds.user, creds.secret).as_bytes());
    put_entry(path, key, json::object([("auth", json::string(encoded))]))
}

/// Sets `auths.<key>` to `entry` in the file at `path` (created if missing).
fn put_entry(path: &Path, key: &str, entry: JsonValue) -> Result<()> {
    let what = || format!("credentials file {}", path.display());
    let mut doc = read_auth_file(path)?.unwrap_or_else(|| JsonValue::Object(HashMap::new()));
    let auths = auths_mut(&mut doc).with_context(what)?;
    auths.insert(key.to_string(), entry);
    write_atomic(path, json::to_string_pretty_sorted(&doc).as_bytes()).with_context(what)
}

/// Removes the entries for `key` (exact or after normalisation) from the file at `path`.
/// Returns whether anything was removed; a missing file removes nothing.
pub fn remove(path: &Path, key: &str) -> Result<bool> {
    let what = || format!("credentials file {}", path.display());
    let Some(mut doc) = read_auth_file(path)? else {
        return Ok(false);
    };
    let auths = auths_mut(&mut doc).with_context(what)?;
    let want = normalize_key(key);
    let before = auths.len();
    auths.retain(|name, _| name != key && normalize_key(name) != want);
    if auths.len() == before {
        return Ok(false);
    }
    write_atomic(path, json::to_string_pretty_sorted(&doc).as_bytes()).with_context(what)?;
    Ok(true)
}

/// The document's `auths` object, created if absent.
fn auths_mut(doc: &mut JsonValue) -> Result<&mut HashMap<String, JsonValue>> {
    let JsonValue::Object(root) = doc else {
        return Err(Error::new("expected a JSON object"));
    };
    let auths = root
        .entry("auths".to_string())
        .or_insert_with(|| JsonValue::Object(HashMap::new()));
    if auths.is_null() {
        *auths = JsonValue::Object(HashMap::new());
    }
    match auths {
        JsonValue::Object(m) => Ok(m),
        _ => Err(Error::new("field \"auths\" must be an object")),
    }
}

/// Writes `data` to a temporary file beside `path` (mode 0600), syncs it, and renames it
/// over `path`. Creates the directory (mode 0700) if needed.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create directory {}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::new("not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = fs::remove_file(&tmp); // a leftover from a crashed run
    let result = (|| -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("barge-cred-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    fn lookup_one(f: &Path, k: &[String]) -> Result<Option<Credentials>> {
        lookup_in(&[f.to_path_buf()], k)
    }

    fn creds(u: &str, s: &str) -> Credentials {
        Credentials {
            user: u.into(),
            secret: s.into(),
        }
    }

    #[test]
    fn user_arg() {
        assert_eq!(from_user_arg("u:p").unwrap(), creds("u", "p"));
        assert_eq!(from_user_arg("u:p:q").unwrap(), creds("u", "p:q"));
        assert_eq!(from_user_arg("u:").unwrap(), creds("u", ""));
        let e = from_user_arg("justuser").unwrap_err();
        assert!(e.to_string().contains("USER:PASSWORD"));
        let e = from_user_arg(":secretpw").unwrap_err();
        assert!(!e.to_string().contains("secretpw"));
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = format!("{:?}", creds("alice", "hunter2"));
        assert!(s.contains("alice") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn lookup_order_and_key_matching() {
        let d = tmpdir("lookup");
        let docker = d.join("config.json");
        let podman = d.join("auth.json");
        let missing = d.join("nope.json");
        fs::write(
            &docker,
            format!(
                r#"{{"auths":{{
                    "https://index.docker.io/v1/":{{"auth":"{}"}},
                    "localhost:5000":{{"identitytoken":"x"}},
                    "creds.example":{{}},
                    "ghcr.io":{{"username":"gh","password":"pat"}}
                }},"credsStore":"","HttpHeaders":{{"X":"y"}}}}"#,
                base64_encode(b"hub:pw:with:colons")
            ),
        )
        .unwrap();
        fs::write(
            &podman,
            format!(
                r#"{{"auths":{{"http://localhost:5000/v2/":{{"auth":"{}"}},"creds.example":{{"auth":"{}"}}}}}}"#,
                base64_encode(b"local:pw"),
                base64_encode(b"p:q"),
            ),
        )
        .unwrap();
        let files = vec![missing, docker, podman];
        let hub = keys(&[
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ]);
        assert_eq!(
            lookup_in(&files, &hub).unwrap(),
            Some(creds("hub", "pw:with:colons"))
        );
        // Only normalised matching finds Docker Hub from the bare host name.
        assert_eq!(
            lookup_in(&files, &keys(&["index.docker.io"])).unwrap(),
            Some(creds("hub", "pw:with:colons"))
        );
        assert_eq!(
            lookup_in(&files, &keys(&["ghcr.io", "https://ghcr.io"])).unwrap(),
            Some(creds("gh", "pat"))
        );
        // identitytoken-only and empty entries are skipped; the next file answers.
        let local = keys(&[
            "localhost:5000",
            "https://localhost:5000",
            "http://localhost:5000",
        ]);
        assert_eq!(
            lookup_in(&files, &local).unwrap(),
            Some(creds("local", "pw"))
        );
        assert_eq!(
            lookup_in(&files, &keys(&["creds.example"])).unwrap(),
            Some(creds("p", "q"))
        );
        assert_eq!(lookup_in(&files, &keys(&["quay.io"])).unwrap(), None);
        assert_eq!(lookup_in(&[], &keys(&["quay.io"])).unwrap(), None);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn exact_match_beats_normalised() {
        let d = tmpdir("exact");
        let f = d.join("c.json");
        fs::write(
            &f,
            format!(
                r#"{{"auths":{{"https://h:1":{{"auth":"{}"}},"h:1":{{"auth":"{}"}}}}}}"#,
                base64_encode(b"a:1"),
                base64_encode(b"b:2")
            ),
        )
        .unwrap();
        assert_eq!(
            lookup_one(&f, &keys(&["h:1", "https://h:1"])).unwrap(),
            Some(creds("b", "2"))
        );
        assert_eq!(
            lookup_in(&[f], &keys(&["https://h:1", "h:1"])).unwrap(),
            Some(creds("a", "1"))
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn malformed_files_are_named_in_errors() {
        let d = tmpdir("bad");
        let cases = [
            ("{not json", "invalid JSON"),
            ("[]", "expected a JSON object"),
            (r#"{"auths":[]}"#, "field \"auths\" must be an object"),
            (r#"{"auths":{"h":"x"}}"#, "auths.\"h\""),
            (r#"{"auths":{"h":{"auth":"!!!"}}}"#, "not base64"),
            (
                r#"{"auths":{"h":{"auth":"bm9jb2xvbg=="}}}"#,
                "not base64 of USER:PASSWORD",
            ),
        ];
        for (i, (content, want)) in cases.iter().enumerate() {
            let f = d.join(format!("{i}.json"));
            fs::write(&f, content).unwrap();
            let e = lookup_one(&f, &keys(&["h"])).unwrap_err().to_string();
            assert!(e.contains(&f.display().to_string()), "{e}");
            assert!(e.contains(want), "{content}: {e}");
        }
        let e = lookup_one(&d, &keys(&["h"])).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn store_and_remove_keep_other_keys() {
        let d = tmpdir("store");
        let f = d.join("sub").join("config.json");
        store(&f, "localhost:5000", &creds("u", "p")).unwrap();
        let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            lookup_one(&f, &keys(&["localhost:5000"])).unwrap(),
            Some(creds("u", "p"))
        );

        fs::write(
            &f,
            r#"{"auths":{"other.io":{"auth":"eDp5"}},"credHelpers":{"gcr.io":"gcloud"},"psFormat":"table"}"#,
        )
        .unwrap();
        store(&f, "https://index.docker.io/v1/", &creds("hub", "s3cret")).unwrap();
        let doc = json::parse(&fs::read(&f).unwrap(), "t").unwrap();
        assert_eq!(json::get_str(&doc, "psFormat").unwrap(), "table");
        assert_eq!(json::get_str(&doc, "credHelpers.gcr.io").ok(), None); // dotted key
        assert!(json::get_object(&doc, "credHelpers")
            .unwrap()
            .contains_key("gcr.io"));
        assert_eq!(
            lookup_one(&f, &keys(&["other.io"])).unwrap(),
            Some(creds("x", "y"))
        );
        assert_eq!(
            lookup_one(&f, &keys(&["docker.io", "index.docker.io"])).unwrap(),
            Some(creds("hub", "s3cret"))
        );
        // Overwrite.
        store(&f, "https://index.docker.io/v1/", &creds("hub", "new")).unwrap();
        assert_eq!(
            lookup_one(&f, &keys(&["index.docker.io"])).unwrap(),
            Some(creds("hub", "new"))
        );

        assert!(remove(&f, "index.docker.io").unwrap());
        assert!(!remove(&f, "index.docker.io").unwrap());
        assert_eq!(lookup_one(&f, &keys(&["index.docker.io"])).unwrap(), None);
        let doc = json::parse(&fs::read(&f).unwrap(), "t").unwrap();
        assert_eq!(json::get_str(&doc, "psFormat").unwrap(), "table");
        assert!(!remove(&d.join("missing.json"), "x").unwrap());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(f.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn store_refuses_to_clobber_a_malformed_file() {
        let d = tmpdir("clobber");
        let f = d.join("config.json");
        fs::write(&f, "{broken").unwrap();
        assert!(store(&f, "h", &creds("u", "p")).is_err());
        assert_eq!(fs::read_to_string(&f).unwrap(), "{broken");
        let _ = fs::remove_dir_all(&d);
    }

    /// The helper `doc` configures for `keys`: (name, setting) or None for `auths`.
    fn chosen(doc: &str, keys: &[String]) -> Result<Option<(String, String)>> {
        let doc = json::parse(doc.as_bytes(), "t").unwrap();
        let h = configured_helper(&doc, Path::new("/c.json"), keys)?;
        Ok(h.map(|h| (h.name, h.setting)))
    }

    fn some(name: &str, setting: &str) -> Option<(String, String)> {
        Some((name.into(), setting.into()))
    }

    #[test]
    fn helper_precedence_is_dockers() {
        let local = keys(&["h:1", "https://h:1", "http://h:1"]);
        let hub = crate::reference::registry_credential_keys("docker.io");
        let both = r#"{"credsStore":"store","credHelpers":{"h:1":"per-host"},"auths":{"h:1":{"auth":"eDp5"}}}"#;
        assert_eq!(
            chosen(both, &local).unwrap(),
            some("per-host", "credHelpers.\"h:1\"")
        );
        assert_eq!(
            chosen(both, &keys(&["other:2"])).unwrap(),
            some("store", "credsStore")
        );
        assert_eq!(chosen(both, &hub).unwrap(), some("store", "credsStore"));
        // Docker Hub's helper key is the server URL Docker uses.
        let hub_doc = r#"{"credHelpers":{"https://index.docker.io/v1/":"hubhelper"}}"#;
        assert_eq!(
            chosen(hub_doc, &hub).unwrap(),
            some("hubhelper", "credHelpers.\"https://index.docker.io/v1/\"")
        );
        // A key written as a URL matches after normalisation.
        let url_key = r#"{"credHelpers":{"https://h:1/":"u"}}"#;
        assert_eq!(
            chosen(url_key, &local).unwrap(),
            some("u", "credHelpers.\"https://h:1/\"")
        );
        // An empty helper name for the host means the file, even with a credsStore.
        let empty = r#"{"credsStore":"store","credHelpers":{"h:1":""}}"#;
        assert_eq!(chosen(empty, &local).unwrap(), None);
        assert_eq!(chosen(r#"{"credsStore":""}"#, &local).unwrap(), None);
        assert_eq!(chosen(r#"{"auths":{}}"#, &local).unwrap(), None);
        assert_eq!(
            chosen(r#"{"credsStore":null,"credHelpers":null}"#, &local).unwrap(),
            None
        );
        // Malformed settings are errors naming the field.
        let e = chosen(r#"{"credHelpers":{"h:1":7}}"#, &local).unwrap_err();
        assert!(
            e.to_string()
                .contains("credHelpers.\"h:1\" must be a string"),
            "{e}"
        );
        let e = chosen(r#"{"credsStore":"../bin/sh"}"#, &local).unwrap_err();
        assert!(e.to_string().contains("not a helper name"), "{e}");
        assert!(chosen(r#"{"credsStore":7}"#, &local).is_err());
        assert!(chosen(r#"{"credHelpers":[]}"#, &local).is_err());
    }

    #[test]
    fn a_configured_helper_is_asked_instead_of_auths() {
        let d = tmpdir("helper-missing");
        let f = d.join("config.json");
        let name = "barge-test-surely-absent";
        fs::write(
            &f,
            format!(r#"{{"credsStore":"{name}","auths":{{"h:1":{{"auth":"eDp5"}}}}}}"#),
        )
        .unwrap();
        let e = lookup_one(&f, &keys(&["h:1"])).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "docker-credential-{name} not found on PATH: install it or remove credsStore from {}",
                f.display()
            )
        );
        // credHelpers "" for the host: the file's auths answer.
        fs::write(
            &f,
            format!(r#"{{"credsStore":"{name}","credHelpers":{{"h:1":""}},"auths":{{"h:1":{{"auth":"eDp5"}}}}}}"#),
        )
        .unwrap();
        assert_eq!(
            lookup_one(&f, &keys(&["h:1"])).unwrap(),
            Some(creds("x", "y"))
        );
        let e = save(&f, &keys(&["other:2"]), &creds("u", "p")).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn passwords_are_never_two() {
        let e = with_password("u:p", true).unwrap_err().to_string();
        assert!(e.contains("two passwords") && !e.contains(":p"), "{e}");
        let e = resolve(None, true, &keys(&["h"])).unwrap_err().to_string();
        assert!(e.contains("-u USER"), "{e}");
        assert_eq!(with_password("u:p", false).unwrap(), creds("u", "p"));
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(
            normalize_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalize_key("http://Localhost:5000/v2"), "localhost:5000");
        assert_eq!(normalize_key("quay.io/org/repo"), "quay.io");
        assert_eq!(normalize_key("h:1"), "h:1");
    }
}
