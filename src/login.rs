//! `barge login` and `barge logout`: check credentials against a registry and store
//! them where Docker, podman and skopeo read them: through the credential helper that
//! Docker's config.json names for the registry (`credHelpers`, `credsStore`), else in its
//! `auths` (mode 0600, every other key kept).

use crate::error::{Error, Result};
use crate::reference;
use crate::registry::client::{Registry, TransportOptions};
use crate::registry::credentials::{self, prompt, Credentials};

pub struct LoginOptions {
    pub registry: Option<String>,
    pub user: Option<String>,
    pub password_stdin: bool,
    pub transport: TransportOptions,
}

/// The registry a login is for: (API host to talk to, credential keys; the first is the
/// key to store under and the server URL a helper gets).
fn target(registry: Option<&str>) -> Result<(String, Vec<String>)> {
    let name = registry.unwrap_or(reference::DOCKER_HUB);
    let name = name
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let name = name.trim_end_matches('/');
    let name = name.strip_suffix("/v1").unwrap_or(name);
    let registry = reference::normalize_registry(name)?;
    let keys = reference::registry_credential_keys(&registry);
    let host = if registry == reference::DOCKER_HUB {
        reference::DOCKER_HUB_API.to_string()
    } else {
        registry
    };
    Ok((host, keys))
}

pub fn login(opts: &LoginOptions) -> Result<String> {
    let (host, keys) = target(opts.registry.as_deref())?;
    let creds = ask_credentials(opts)?;
    let mut reg = Registry::for_host(&host, Some(creds.clone()), &opts.transport, Vec::new())?;
    reg.check_login()?;
    let path = credentials::default_store_path();
    let place = credentials::save(&path, &keys, &creds)
        .map_err(|e| e.context(format!("store credentials for {}", keys[0])))?;
    Ok(format!(
        "Login Succeeded: {} (credentials stored in {place})",
        keys[0]
    ))
}

pub fn logout(registry: Option<&str>) -> Result<String> {
    let (_, keys) = target(registry)?;
    let path = credentials::default_store_path();
    let removed = credentials::forget(&path, &keys)?;
    if removed.is_empty() {
        let helper = credentials::helper_for(&path, &keys)?;
        let place = match helper {
            Some(h) => format!("{} and {}", h.program(), path.display()),
            None => path.display().to_string(),
        };
        return Err(Error::new(format!("not logged in to {}", keys[0]))
            .hint(format!("nothing is stored for it in {place}")));
    }
    Ok(format!(
        "Removed credentials for {} from {}",
        keys[0],
        removed.join(" and ")
    ))
}

fn ask_credentials(opts: &LoginOptions) -> Result<Credentials> {
    let user = match &opts.user {
        Some(u) => u.clone(),
        None if opts.password_stdin => {
            return Err(Error::new("--password-stdin needs a user name").hint("add -u USER"))
        }
        None if !prompt::stdin_is_terminal() => {
            return Err(Error::new("no user name and no terminal to ask for it")
                .hint("give -u USER:PASS, or -u USER with --password-stdin"))
        }
        None => prompt::ask("Username: ", true)?,
    };
    credentials::with_password(&user, opts.password_stdin)
}
