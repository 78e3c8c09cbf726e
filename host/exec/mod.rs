//! `exec`: a service that is a program of its own, run once per connection with the connection
//! as its descriptors 0 and 1, the way inetd, `tcpserver` and systemd's `Accept=yes` sockets run
//! one. The host never sees the bytes: no line framing, no relay.
//!
//! - [`Program`] (this file): the port's options, checked once (`porthost check` reports a
//!   missing program, an unknown user, a limit out of range, with the options' line).
//! - [`command`]: the command line of one connection (a clean environment with the UCSPI-TCP
//!   variables, the working directory, the user, the limits), spawned by the host.
//! - [`vfork`]: the same command line, started by the process-per-client fork server without
//!   copying it (`CLONE_VM | CLONE_VFORK`, as `posix_spawn`): no relay, no copy of the socket's
//!   bytes and none of the forker's memory.
//! - [`run`]: the host's side of one program under `sequential`, `thread-per-client` and
//!   `async`: start it, log its stderr, signal its process group when the port drains, wait
//!   for it, end the connection.
//! - [`stderr`]: a program's stderr into the host's log, a line at a time, bounded.

pub mod command;
pub mod run;
pub mod stderr;
pub mod vfork;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use nix::sys::resource::Resource;
use nix::unistd::{Gid, Group, Uid, User};
use porthost_services::{Conn, OptionDoc, Options, Registration, Service};
use serde::Deserialize;

/// The service's registered name, which the config and the port know it by.
pub use crate::config::EXEC_SERVICE as NAME;

/// The `PATH` a program gets unless `env` sets one, and where a bare program name is looked up.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The variables the host sets for each connection (UCSPI-TCP's, as `tcpserver` sets them).
pub const UCSPI_VARS: [&str; 5] = [
    "PROTO",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
];

/// Bounds on what the options may hold, so that a command line always fits the fork server's
/// messages and `execve`'s limits.
const MAX_ARGS: usize = 256;
const MAX_ARG_BYTES: usize = 4096;
const MAX_ENV: usize = 256;

/// The limits `max_address_space_bytes`, `max_cpu_secs` and `max_open_files` may take.
const ADDRESS_SPACE: (u64, u64) = (1 << 20, 1 << 40);
const CPU_SECS: (u64, u64) = (1, 7 * 24 * 3600);
const OPEN_FILES: (u64, u64) = (3, 1 << 20);

/// The `exec` service of one port: the program it runs for each connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// The file executed: `command[0]` resolved (a relative path against the config file's
    /// folder, a bare name in `PATH`), absolute.
    pub path: PathBuf,
    /// `command` as written; the program's `argv`.
    pub args: Vec<String>,
    /// `PATH` and `env`; the UCSPI-TCP variables are added per connection.
    pub env: Vec<(String, String)>,
    /// The working directory: `cwd`, or the config file's folder.
    pub cwd: PathBuf,
    /// Who it runs as, when the host, running as root, drops privileges.
    pub credentials: Option<Credentials>,
    /// `setrlimit` soft and hard limits, set in the program's process before it starts.
    pub limits: Vec<(Resource, u64)>,
}

/// Who a program runs as when the host, running as root, drops privileges to a user: its
/// uid, its group and the user's supplementary groups, as `initgroups` gives them at login,
/// so that the program holds that user's groups and none of root's. Looked up when the port
/// is built, since the lookup (NSS, `/etc/group`) cannot run between `fork` and `execve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub uid: Uid,
    pub gid: Gid,
    /// `getgrouplist(user, gid)`: `gid` and every group that lists the user as a member.
    pub groups: Vec<Gid>,
}

/// The options as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptions {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    group: Option<String>,
    max_address_space_bytes: Option<u64>,
    max_cpu_secs: Option<u64>,
    max_open_files: Option<u64>,
}

impl Program {
    /// Checks a port's options; every problem found is reported, joined with "; ".
    pub fn from_options(options: &Options) -> Result<Program, String> {
        let raw: RawOptions = options.parse()?;
        let base = std::path::absolute(options.base_dir()).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        let env = environment(&raw.env, &mut errors);
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        let path = executable(&raw.command, &base, path_var, &mut errors);
        let cwd = match &raw.cwd {
            None => base.clone(),
            Some(cwd) => {
                let cwd = base.join(cwd);
                if !cwd.is_dir() {
                    errors.push(format!("cwd {} is not a directory", cwd.display()));
                }
                cwd
            }
        };
        let credentials = credentials(raw.user.as_deref(), raw.group.as_deref(), &mut errors);
        let limits = limits(&raw, &mut errors);
        match path {
            Some(path) if errors.is_empty() => Ok(Program {
                path,
                args: raw.command,
                env,
                cwd,
                credentials,
                limits,
            }),
            _ => Err(errors.join("; ")),
        }
    }

    /// The command as the log and the events show it.
    pub fn display(&self) -> String {
        shell_words(&self.args)
    }
}

/// A command's argv as a shell would read it back (the log, the events, `porthost status`): a
/// word with anything but plain characters in it (a space, a quote, nothing at all) in single
/// quotes, so that words never run together.
pub fn shell_words(argv: &[String]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_/.,:=@%+-".contains(c);
    argv.iter()
        .map(|word| {
            if !word.is_empty() && word.chars().all(plain) {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `PATH` (the default unless `env` sets it) and `env`, checked.
fn environment(env: &BTreeMap<String, String>, errors: &mut Vec<String>) -> Vec<(String, String)> {
    if env.len() > MAX_ENV {
        errors.push(format!(
            "env has {} variables; at most {MAX_ENV}",
            env.len()
        ));
    }
    let mut all = vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())];
    for (key, value) in env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            errors.push(format!(
                "env {key:?}: a name must be non-empty without '=' or NUL, a value without NUL"
            ));
        } else if UCSPI_VARS.contains(&key.as_str()) {
            errors.push(format!(
                "env {key}: the host sets {key} for each connection (UCSPI-TCP); remove it"
            ));
        } else if key == "PATH" {
            all[0].1 = value.clone();
        } else {
            all.push((key.clone(), value.clone()));
        }
    }
    all
}

/// `command[0]` resolved to the file to execute, checked to exist and be executable.
fn executable(
    command: &[String],
    base: &Path,
    path_var: &str,
    errors: &mut Vec<String>,
) -> Option<PathBuf> {
    let Some(program) = command.first() else {
        errors.push(
            "command is empty; give the program and its arguments, e.g. command = [\"/bin/cat\"]"
                .to_owned(),
        );
        return None;
    };
    if command.len() > MAX_ARGS {
        errors.push(format!(
            "command has {} words; at most {MAX_ARGS}",
            command.len()
        ));
    }
    if let Some(arg) = command
        .iter()
        .find(|a| a.len() > MAX_ARG_BYTES || a.contains('\0'))
    {
        errors.push(format!(
            "command word {:?}...: at most {MAX_ARG_BYTES} bytes, without NUL",
            arg.chars().take(20).collect::<String>()
        ));
    }
    if program.is_empty() {
        errors.push("command[0] is empty: it names the program".to_owned());
        return None;
    }
    if program.contains('/') {
        let path = base.join(program);
        return match is_executable(&path) {
            Ok(()) => Some(path),
            Err(why) => {
                errors.push(format!(
                    "command[0] {program:?} (resolved to {}) {why}",
                    path.display()
                ));
                None
            }
        };
    }
    let found = path_var
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| base.join(dir).join(program))
        .find(|path| is_executable(path).is_ok());
    if found.is_none() {
        errors.push(format!(
            "command[0] {program:?} is not an executable file in PATH ({path_var}); give its path"
        ));
    }
    found
}

/// Whether `path` is a file this host may execute, or why not.
fn is_executable(path: &Path) -> Result<(), &'static str> {
    match std::fs::metadata(path) {
        Err(_) => Err("does not exist"),
        Ok(meta) if !meta.is_file() => Err("is not a file"),
        Ok(_) => nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
            .map_err(|_| "is not executable"),
    }
}

/// `user` and `group`, looked up; `None` when the program runs as the host's own user.
fn credentials(
    user: Option<&str>,
    group: Option<&str>,
    errors: &mut Vec<String>,
) -> Option<Credentials> {
    let root = Uid::effective().is_root();
    let (me, my_group) = (Uid::effective(), Gid::effective());
    let user = match user {
        None => None,
        Some(name) => match User::from_name(name) {
            Ok(Some(user)) => Some(user),
            Ok(None) => {
                errors.push(format!("user {name:?} does not exist on this machine"));
                return None;
            }
            Err(e) => {
                errors.push(format!("user {name:?}: cannot look it up: {e}"));
                return None;
            }
        },
    };
    let gid = match group {
        None => None,
        Some(name) => match Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid),
            Ok(None) => {
                errors.push(format!("group {name:?} does not exist on this machine"));
                return None;
            }
            Err(e) => {
                errors.push(format!("group {name:?}: cannot look it up: {e}"));
                return None;
            }
        },
    };
    if !root {
        if let Some(user) = &user
            && user.uid != me
        {
            errors.push(format!(
                "user {:?}: the host runs as uid {me}, not as root, so it cannot run programs \
                 as another user; remove `user` or start the host as root",
                user.name
            ));
        }
        if let Some(gid) = gid
            && gid != my_group
        {
            errors.push(format!(
                "group {:?}: the host runs as gid {my_group}, not as root, so it cannot run \
                 programs in another group; remove `group` or start the host as root",
                group.unwrap_or_default()
            ));
        }
        return None;
    }
    let (user, gid) = match (user, gid) {
        (None, None) => return None,
        (Some(user), gid) => {
            let gid = gid.unwrap_or(user.gid);
            (user, gid)
        }
        // A group alone: the host's own user (root) in that group, with root's groups.
        (None, Some(gid)) => match User::from_uid(me) {
            Ok(Some(user)) => (user, gid),
            _ => {
                errors.push(format!(
                    "group {:?}: cannot look up the host's own user (uid {me})",
                    group.unwrap_or_default()
                ));
                return None;
            }
        },
    };
    let groups = std::ffi::CString::new(user.name.as_str())
        .map_err(|e| e.to_string())
        .and_then(|name| nix::unistd::getgrouplist(&name, gid).map_err(|e| e.to_string()));
    match groups {
        Ok(groups) => Some(Credentials {
            uid: user.uid,
            gid,
            groups,
        }),
        Err(e) => {
            errors.push(format!(
                "user {:?}: cannot look up its groups: {e}",
                user.name
            ));
            None
        }
    }
}

/// The resource limits, each within its range and, for a host that is not root, within the
/// host's own hard limit (only root may raise one).
fn limits(raw: &RawOptions, errors: &mut Vec<String>) -> Vec<(Resource, u64)> {
    let root = Uid::effective().is_root();
    let wanted = [
        (
            "max_address_space_bytes",
            raw.max_address_space_bytes,
            Resource::RLIMIT_AS,
            ADDRESS_SPACE,
        ),
        (
            "max_cpu_secs",
            raw.max_cpu_secs,
            Resource::RLIMIT_CPU,
            CPU_SECS,
        ),
        (
            "max_open_files",
            raw.max_open_files,
            Resource::RLIMIT_NOFILE,
            OPEN_FILES,
        ),
    ];
    let mut limits = Vec::new();
    for (key, value, resource, (low, high)) in wanted {
        let Some(value) = value else { continue };
        if !(low..=high).contains(&value) {
            errors.push(format!("{key} = {value}: must be from {low} to {high}"));
            continue;
        }
        if !root
            && let Ok((_, hard)) = nix::sys::resource::getrlimit(resource)
            && value > hard
        {
            errors.push(format!(
                "{key} = {value} is above the host's hard limit ({hard}), which only root may \
                 raise"
            ));
            continue;
        }
        limits.push((resource, value));
    }
    limits
}

/// The `exec` service of a port.
#[derive(Debug)]
pub struct Exec {
    pub program: Arc<Program>,
    /// The command line as the fork server starts it ([`vfork`]), made once.
    pub prepared: vfork::Prepared,
}

/// The `exec` service behind `service`, if that is what it is.
pub fn of(service: &dyn Service) -> Option<&Exec> {
    (service as &dyn std::any::Any).downcast_ref::<Exec>()
}

#[async_trait]
impl Service for Exec {
    /// Runs the program on the connection without a port's table around it (the host's models
    /// call [`run::run`] with the connection's admission instead, for drain and metrics).
    async fn serve(&self, conn: Conn) -> std::io::Result<()> {
        let stream = conn.stream.into_std()?;
        run::run(&self.program, stream, conn.peer, None).await
    }
}

fn build(options: &Options) -> Result<Arc<dyn Service>, String> {
    let program = Program::from_options(options)?;
    Ok(Arc::new(Exec {
        prepared: vfork::Prepared::new(&program)?,
        program: Arc::new(program),
    }))
}

inventory::submit! {
    Registration {
        name: NAME,
        summary: "runs a program per connection, the connection as its stdin and stdout (inetd, tcpserver)",
        options: &[
            OptionDoc { name: "command", default: "required", meaning: "the program and its arguments, an array, never a shell; a relative path from the config file's folder, a bare name from PATH" },
            OptionDoc { name: "env", default: "{}", meaning: "variables added to a clean environment of PATH and PROTO, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP, TCPLOCALPORT" },
            OptionDoc { name: "cwd", default: "the config file's folder", meaning: "the program's working directory" },
            OptionDoc { name: "user", default: "the host's", meaning: "run as this user (the host must be root, unless it is its own)" },
            OptionDoc { name: "group", default: "the user's", meaning: "run in this group" },
            OptionDoc { name: "max_address_space_bytes", default: "none", meaning: "RLIMIT_AS of the program" },
            OptionDoc { name: "max_cpu_secs", default: "none", meaning: "RLIMIT_CPU: CPU seconds, then SIGXCPU/SIGKILL" },
            OptionDoc { name: "max_open_files", default: "none", meaning: "RLIMIT_NOFILE of the program" },
        ],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn a_command_reads_back_as_its_words() {
        let words =
            |w: &[&str]| shell_words(&w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(words(&["/bin/cat"]), "/bin/cat");
        assert_eq!(words(&["python3", "a b.py", ""]), "python3 'a b.py' ''");
        assert_eq!(words(&["sh", "-c", "echo it's"]), r"sh -c 'echo it'\''s'");
        assert_eq!(words(&["x", "$HOME"]), "x '$HOME'");
    }
}
