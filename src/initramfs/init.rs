//! The `/init` barge writes when the image has none (or `--init` asks): a `#!/bin/sh`
//! script that mounts /proc, /sys and /dev, sets the image config's Env and
//! WorkingDir, and `exec`s the command (Entrypoint + Cmd, or `--init`'s) as process 1.
//! Every word from the image is single-quoted, so nothing in it is expanded.

use crate::error::{Error, Result};
use crate::json;
use tinyjson::JsonValue;

/// The parts of an image config's `config` that say how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
}

/// Docker's PATH for a container whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl RunConfig {
    /// Reads `config.Env`, `Entrypoint`, `Cmd` and `WorkingDir` (absent or null: empty).
    pub fn from_config(raw: &JsonValue) -> Result<RunConfig> {
        Ok(RunConfig {
            env: json::opt_str_array(raw, "config.Env")?,
            entrypoint: json::opt_str_array(raw, "config.Entrypoint")?,
            cmd: json::opt_str_array(raw, "config.Cmd")?,
            working_dir: json::opt_str(raw, "config.WorkingDir")?
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// The working directory as an image path (no leading `/`), if one is set.
    pub fn work_path(&self) -> Option<Vec<u8>> {
        let clean = crate::layer::names::clean_name(self.working_dir.as_bytes());
        (!self.working_dir.is_empty() && !clean.is_empty()).then_some(clean)
    }
}

/// The script's text for `run`, executing `command` (Entrypoint + Cmd unless given).
pub fn script(image: &str, run: &RunConfig, command: Option<&[String]>) -> Result<Vec<u8>> {
    let argv: Vec<String> = match command {
        Some(c) => c.to_vec(),
        None => run.entrypoint.iter().chain(&run.cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(Error::new(format!(
            "the image {image} has no Entrypoint or Cmd for /init to run"
        ))
        .hint("give the command with --init CMD [ARG...] (last on the command line)"));
    }
    let mut s = String::from("#!/bin/sh\n");
    s.push_str("# /init written by barge: mounts, the image's Env and WorkingDir, then exec.\n");
    s.push_str(&format!("# image: {}\n", image.replace('\n', " ")));
    s.push_str("mount -t proc proc /proc\n");
    s.push_str("mount -t sysfs sysfs /sys\n");
    s.push_str("mount -t devtmpfs devtmpfs /dev\n");
    if !run.env.iter().any(|e| e.starts_with("PATH=")) {
        s.push_str(&format!("export PATH={}\n", quote(DEFAULT_PATH)?));
    }
    for e in &run.env {
        let (name, value) = e.split_once('=').unwrap_or((e, ""));
        if !is_shell_name(name) {
            return Err(Error::new(format!(
                "the image's Env entry {name:?} is not a shell variable name, which /init cannot set"
            ))
            .hint("give the image an /init of its own (a file or symlink at /init)"));
        }
        s.push_str(&format!("export {name}={}\n", quote(value)?));
    }
    if let Some(w) = run.work_path() {
        let mut dir = b"/".to_vec();
        dir.extend_from_slice(&w);
        s.push_str(&format!(
            "cd {} || exit 1\n",
            quote(&String::from_utf8_lossy(&dir))?
        ));
    }
    let words = argv.iter().map(|a| quote(a)).collect::<Result<Vec<_>>>()?;
    s.push_str(&format!("exec {}\n", words.join(" ")));
    Ok(s.into_bytes())
}

/// `'word'`, with each `'` written as `'\''`: the shell expands nothing inside.
fn quote(word: &str) -> Result<String> {
    if word.contains('\0') {
        return Err(Error::new(format!(
            "{word:?} holds a NUL byte, which a shell script cannot pass on"
        ))
        .hint("give the command with --init CMD [ARG...] instead"));
    }
    Ok(format!("'{}'", word.replace('\'', r"'\''")))
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_config() -> RunConfig {
        RunConfig {
            env: vec!["PATH=/bin".into(), "GREETING=it's $HOME `x`".into()],
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo \"$GREETING\"".into()],
            working_dir: "/home/app/".into(),
        }
    }

    #[test]
    fn script_quotes_every_word_from_the_image() {
        let s = String::from_utf8(script("img", &run_config(), None).unwrap()).unwrap();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("mount -t devtmpfs devtmpfs /dev\n"));
        assert!(s.contains("export GREETING='it'\\''s $HOME `x`'\n"));
        assert!(!s.contains("/usr/local/sbin"), "the image's PATH wins");
        assert!(s.contains("cd '/home/app' || exit 1\n"));
        assert!(s.ends_with("exec '/bin/sh' '-c' 'echo \"$GREETING\"'\n"));
    }

    #[test]
    fn init_command_replaces_entrypoint_and_cmd() {
        let cmd = vec!["/bin/busybox".to_string(), "sh".to_string()];
        let s = String::from_utf8(script("img", &run_config(), Some(&cmd)).unwrap()).unwrap();
        assert!(s.ends_with("exec '/bin/busybox' 'sh'\n"));
    }

    #[test]
    fn no_command_and_odd_env_names_are_refused() {
        let empty = RunConfig::default();
        let e = script("img", &empty, None).unwrap_err();
        assert!(e.to_string().contains("--init"), "{e}");
        let mut odd = run_config();
        odd.env.push("A-B=1".into());
        assert!(script("img", &odd, None).is_err());
        let s = String::from_utf8(script("img", &empty, Some(&["x".into()])).unwrap()).unwrap();
        assert!(s.contains("export PATH='/usr/local/sbin:"));
    }
}
