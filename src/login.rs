//! `barge login` and `barge logout`: check credentials against a registry and
//! store them where Docker, podman and skopeo read them (`auths` in Docker's
//! config.json, mode 0600, every other key kept).

use crate::bail;
use crate::error::{Context, Error, Result};
use crate::reference;
use crate::registry::client::{Registry, TransportOptions};
use crate::registry::credentials::{self, Credentials};
use std::io::{BufRead, Read, Write};

pub struct LoginOptions {
    pub registry: Option<String>,
    pub user: Option<String>,
    pub password_stdin: bool,
    pub transport: TransportOptions,
}

/// The registry a login is for: (API host to talk to, key to store under).
fn target(registry: Option<&str>) -> Result<(String, String)> {
    let name = registry.unwrap_or(reference::DOCKER_HUB);
    let name = name
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let name = name.trim_end_matches('/');
    let name = name.strip_suffix("/v1").unwrap_or(name);
    let registry = reference::normalize_registry(name)?;
    let key = reference::registry_credential_keys(&registry).swap_remove(0);
    let host = if registry == reference::DOCKER_HUB {
        reference::DOCKER_HUB_API.to_string()
    } else {
        registry
    };
    Ok((host, key))
}

pub fn login(opts: &LoginOptions) -> Result<String> {
    let (host, key) = target(opts.registry.as_deref())?;
    let creds = ask_credentials(opts)?;
    let mut reg = Registry::for_host(&host, Some(creds.clone()), &opts.transport, Vec::new())?;
    reg.check_login()?;
    let path = credentials::default_store_path();
    credentials::store(&path, &key, &creds)
        .with_context(|| format!("store credentials in {}", path.display()))?;
    Ok(format!(
        "Login Succeeded: {key} (credentials stored in {})",
        path.display()
    ))
}

pub fn logout(registry: Option<&str>) -> Result<String> {
    let (_, key) = target(registry)?;
    let path = credentials::default_store_path();
    match credentials::remove(&path, &key)? {
        true => Ok(format!(
            "Removed credentials for {key} from {}",
            path.display()
        )),
        false => Err(Error::new(format!("not logged in to {key}"))
            .hint(format!("{} has no credentials for it", path.display()))),
    }
}

fn ask_credentials(opts: &LoginOptions) -> Result<Credentials> {
    let user = match &opts.user {
        Some(u) if u.contains(':') => return credentials::from_user_arg(u),
        Some(u) => u.clone(),
        None if opts.password_stdin => bail!("--password-stdin needs -u USER"),
        None => prompt("Username: ", true)?,
    };
    let secret = if opts.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .take(64 << 10)
            .read_to_string(&mut s)
            .context("read password from stdin")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        prompt("Password: ", false)?
    };
    if user.is_empty() || secret.is_empty() {
        bail!("user name and password must not be empty");
    }
    credentials::from_user_arg(&format!("{user}:{secret}"))
}

/// Reads one line from the terminal, without echo for passwords.
fn prompt(label: &str, echo: bool) -> Result<String> {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(0) } != 1 {
        bail!("no terminal to ask for credentials: pass -u USER:PASS or -u USER --password-stdin");
    }
    eprint!("{label}");
    let _ = std::io::stderr().flush();
    let saved = if echo { None } else { disable_echo() };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: restores the attributes read by disable_echo.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        eprintln!();
    }
    read.context("read from terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn disable_echo() -> Option<libc::termios> {
    // SAFETY: tcgetattr fills a zeroed termios; tcsetattr applies a copy with ECHO cleared.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return None;
        }
        let mut quiet = t;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        libc::tcsetattr(0, libc::TCSANOW, &quiet);
        Some(t)
    }
}
