//! porthost-cli: the `porthost` command line over the host library (`run`, `check`,
//! `services`, `status`, `client` and the hidden `forker`) and the bundled [`client`]s, kept
//! out of the server library so that only binaries link clap. The `porthost` binary adds
//! `bench` and `soak` (`host/main.rs`); a binary that links more services, like the example,
//! runs [`main`] and gets these commands.

pub mod client;
pub mod listing;
pub mod status;
pub mod table;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use porthost::config::{Config, LoadError};
use porthost::logging;
use porthost::models::fork_server;
use porthost::sockets::Sockets;
use porthost::supervisor::{Programs, Supervisor};
use porthost::systemd;
use tokio_util::sync::CancellationToken;

/// The command line of a porthost binary: one of its commands, or `run` when none is given.
#[derive(Debug, Parser)]
#[command(
    name = "porthost",
    version,
    about = ABOUT,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What `porthost --help` says first.
pub const ABOUT: &str = "Serve line-protocol services on the ports services.toml names, under the \
    concurrency model it picks: sequential, thread-per-client, process-per-client or async";

/// `porthost run`'s arguments (also those of a bare `porthost`).
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// How the host logs to stderr: text for people, json (one object a line, with the
    /// connection's port, service, model and peer) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `--log-format`'s values: the command line's face of [`logging::Format`], which keeps the
/// server library free of clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line an event, the span's fields in front.
    Text,
    /// For log shippers: one JSON object a line, with the span's fields
    /// (`"span":{"port":7004,"service":...,"peer":...}`).
    Json,
}

impl From<LogFormat> for logging::Format {
    fn from(format: LogFormat) -> logging::Format {
        match format {
            LogFormat::Text => logging::Format::Text,
            LogFormat::Json => logging::Format::Json,
        }
    }
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The services file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every port of the config until SIGINT or SIGTERM, then drain (the default).
    Run(RunArgs),
    /// Validate the config and print what would be served.
    Check(ConfigArg),
    /// List the registered services and the models each can run under.
    Services,
    /// Show a running host's ports, connections, threads and children, from its admin endpoint.
    Status {
        /// The admin endpoint [default: `[host] admin` of the config, else 127.0.0.1:7000].
        #[arg(long)]
        admin: Option<String>,
        /// The admin token, when the endpoint has one [default: `admin_token` of the config].
        #[arg(long, env = "PORTHOST_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Talk to a running service.
    #[command(subcommand)]
    Client(ClientCommand),
    /// The process-per-client helper that forks connection children (started by the host).
    #[command(hide = true)]
    Forker,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// The lecture's palindrome client: sends each stdin line until an empty line or EOF and
    /// prints the verdicts.
    Palindrome {
        /// The server, e.g. 127.0.0.1:7004 (a port alone is on this machine: 7004).
        addr: String,
    },
    /// The word-guess game client: prints the game as it goes and asks for your moves.
    WordGuess {
        /// The server, e.g. 127.0.0.1:7021 (a port alone is on this machine: 7021).
        addr: String,
        /// Your name in the game; asked for on stdin when absent.
        #[arg(long)]
        name: Option<String>,
    },
    /// Any line service: sends each line you type, prints every line the server sends.
    Line {
        /// The server, e.g. 127.0.0.1:7100 (a port alone is on this machine: 7100).
        addr: String,
    },
}

/// Runs the command line and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    exit_code(run(cli.command, cli.run))
}

/// Exit code 0, or 1 after printing the error with its causes.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "porthost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; no command means `run` with the top-level arguments.
pub fn run(command: Option<Command>, default: RunArgs) -> anyhow::Result<()> {
    match command {
        None => serve(&default),
        Some(Command::Run(args)) => serve(&args),
        Some(Command::Check(args)) => {
            let config = load(&args.config)?;
            let plan = table::plan(config.ports.iter().map(|p| (p, None)));
            logging::print(&format!("{plan}{}: ok\n", args.config.display()));
            Ok(())
        }
        Some(Command::Services) => {
            logging::print(&table::services(&listing::listing()));
            Ok(())
        }
        Some(Command::Status {
            admin,
            token,
            watch,
            config,
        }) => {
            // The config names the endpoint and its token, when there is one to read.
            let loaded = Config::load(&config.config);
            let plan = loaded.as_ref().ok().and_then(|c| c.admin.clone());
            let addr = match (admin, &plan, &loaded) {
                (Some(addr), _, _) => addr,
                (None, Some(plan), _) => plan.addr.to_string(),
                (None, None, Ok(_)) => {
                    eprintln!(
                        "porthost: {} has no [host] admin; trying {DEFAULT_ADMIN}",
                        config.config.display()
                    );
                    DEFAULT_ADMIN.to_owned()
                }
                (None, None, Err(e)) => {
                    eprintln!(
                        "porthost: cannot read the admin address from {} ({}); trying \
                         {DEFAULT_ADMIN} (pass --config PATH or --admin ADDR)",
                        config.config.display(),
                        first_line(&e.to_string())
                    );
                    DEFAULT_ADMIN.to_owned()
                }
            };
            let token = token.or_else(|| plan.and_then(|p| p.token));
            status::run(&addr, token.as_deref(), watch)
        }
        Some(Command::Client(ClientCommand::Palindrome { addr })) => {
            crate::client::palindrome::run(&client::address(&addr))
        }
        Some(Command::Client(ClientCommand::WordGuess { addr, name })) => {
            crate::client::word_guess::run(&client::address(&addr), name)
        }
        Some(Command::Client(ClientCommand::Line { addr })) => {
            crate::client::line::run(&client::address(&addr))
        }
        Some(Command::Forker) => {
            logging::init(logging::Format::from_env());
            fork_server::main()
        }
    }
}

/// Where `status` looks for the host when neither `--admin` nor the config says.
const DEFAULT_ADMIN: &str = "127.0.0.1:7000";

/// The `--config` default, which the user may not know they relied on.
const DEFAULT_CONFIG: &str = "config/services.toml";

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Loads a config, saying clearly when the file is not there. Two services of one name are
/// refused first, whether the config uses the name or not: which one runs would be chance.
fn load(path: &Path) -> anyhow::Result<Config> {
    let twice = porthost_services::duplicates();
    if !twice.is_empty() {
        bail!("{}; nothing was started", twice.join("\n"));
    }
    match Config::load(path) {
        Ok(config) => Ok(config),
        Err(LoadError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            if path == Path::new(DEFAULT_CONFIG) {
                bail!(
                    "config file {} not found; run from the directory that holds it, or pass \
                     --config PATH",
                    path.display()
                )
            }
            bail!("config file {} not found", path.display())
        }
        Err(LoadError::Invalid(errors)) => {
            let count = errors.0.len();
            bail!(
                "{errors}\n{count} error{} in {}; nothing was started",
                if count == 1 { "" } else { "s" },
                path.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// `porthost run`: serve until SIGINT or SIGTERM, then drain.
fn serve(args: &RunArgs) -> anyhow::Result<()> {
    let path = &args.config.config;
    logging::init(args.log_format.into());
    let config = load(path)?;
    // Before any thread starts: it reads and clears the environment.
    let sockets = Sockets::from_systemd().context("socket activation")?;
    raise_descriptor_limit();
    let descriptors = descriptors_note(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        // Before anything is printed: whoever waits for the plan table may signal at once.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut hangup = signal(SignalKind::hangup())?;
        let shown = config.path.display().to_string();
        let mut programs = Programs::this_binary()?;
        // The fork server and its children log the same way.
        programs.forker.env.push((
            logging::FORMAT_ENV.into(),
            logging::Format::from(args.log_format).env_value().into(),
        ));
        let mut host = Supervisor::start(config, sockets, programs)
            .await
            .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        // One block: the table, where to watch it, and the note on descriptors.
        let mut plan = table::plan(host.ports().map(|(p, o)| (p, Some(o))));
        if let Some(addr) = host.admin_addr() {
            let status = if path == Path::new(DEFAULT_CONFIG) {
                "porthost status".to_owned()
            } else {
                format!("porthost status --config {}", path.display())
            };
            plan +=
                &format!("live page: http://{addr}/   metrics: http://{addr}/metrics   {status}\n");
        }
        if let Some(note) = descriptors {
            plan += &table::wrap(&note, NOTE_WIDTH);
        }
        logging::print(&plan);
        info!(
            pid = std::process::id(),
            config = %shown,
            "serving {} port(s)",
            host.ports().count()
        );
        systemd::ready(&host.observed());
        let informing = CancellationToken::new();
        tokio::spawn(systemd::keep_informed(host.observed(), informing.clone()));
        let name = loop {
            tokio::select! {
                _ = terminate.recv() => break "SIGTERM",
                _ = interrupt.recv() => break "SIGINT",
                _ = hangup.recv() => {
                    systemd::reloading();
                    host.reload_from(path).await;
                    systemd::ready(&host.observed());
                }
            }
        };
        info!("{name}: draining");
        systemd::stopping();
        informing.cancel();
        host.drain().await;
        info!("stopped");
        Ok(())
    })
}

/// Descriptors a connection costs the host: its socket, and the second handle the host keeps to
/// close it at the end of a drain wherever it is served.
const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// How wide the plan's notes are wrapped: a terminal's 100 columns, as the table fits.
const NOTE_WIDTH: usize = 96;

/// Says, once at start, when the descriptor limit cannot hold every port full: beyond it, accept
/// waits for descriptors to free up (with a warning each time), which looks like a slow server.
fn descriptors_note(config: &porthost::config::Config) -> Option<String> {
    use nix::sys::resource::{Resource, getrlimit};
    let connections: u64 = config
        .ports
        .iter()
        .map(|p| p.entry.max_connections as u64)
        .sum();
    let needed = connections.saturating_mul(DESCRIPTORS_PER_CONNECTION);
    let (limit, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    (needed > limit).then(|| {
        format!(
            "note: the ports may hold {connections} connections at once, \
             {DESCRIPTORS_PER_CONNECTION} descriptors each, but this process may open {limit}: \
             beyond about {} clients, accept waits for descriptors to free up (raise `ulimit -n`, \
             or LimitNOFILE= under systemd)",
            limit / DESCRIPTORS_PER_CONNECTION
        )
    })
}

/// Many clients at once need many descriptors: lift the soft limit to the hard one, as servers
/// commonly do. If that fails the host still runs, and accept backs off when it runs out.
pub fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
