//! The `portico` command line: `run`, `validate`, `explain`, `certs`, `keys`, `demo` and
//! `grpc-hello` (the demo's native gRPC client). Thin: it parses
//! arguments, sets up logging and the async runtime, and calls into the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use portico::{config, Config, Gateway};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "portico", version, about = "Portico API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Worker threads (overrides runtime.workers).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Check a config file and list every problem in it.
    Validate { file: PathBuf },
    /// Show which route a request would take, and why.
    Explain {
        #[arg(short, long)]
        config: PathBuf,
        /// HTTP method, e.g. GET.
        method: String,
        /// `http://host/path?query` or `/path?query` (then give the host with -H Host:…).
        url: String,
        /// Request header `Name: value`; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Generate a local development CA and a server certificate for localhost, 127.0.0.1
    /// and api.example.com (ca.pem, server.pem, server-key.pem).
    Certs {
        /// Where to write them.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Make API keys and client secrets, and the digests the config stores.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Start demo backends on loopback and the gateway in front of them (HTTP on :8080,
    /// HTTPS on :8443 with the certificates from ./certs, or fresh ones in a temp dir).
    Demo {
        /// Worker threads (default: the demo config's runtime.workers, else one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Call the demo's helloworld.Greeter/SayHello as a native gRPC client (h2c), e.g.
    /// through the gateway.
    GrpcHello {
        /// Where to call.
        #[arg(long, default_value = "127.0.0.1:8080")]
        to: std::net::SocketAddr,
        /// The name to greet.
        name: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a random API key (or, with --client-secret, an OAuth2 client secret) and print
    /// it with its digest.
    New {
        /// Make a client secret (`sk_…`) instead of an API key (`pk_…`).
        #[arg(long)]
        client_secret: bool,
    },
    /// Print the digest of an existing key: given as an argument, or read from standard input
    /// when left out (which keeps it out of the shell history).
    Hash { key: Option<String> },
    /// Add a signing key to an OAuth2 server's key ring (its `signing_keys` directory): it is
    /// published at once and signs tokens `publish_ahead` later.
    SigningKey {
        #[arg(long)]
        dir: PathBuf,
        /// ES256 (default) or EdDSA.
        #[arg(long, default_value = "ES256")]
        algorithm: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run { config, workers } => run(config, workers),
        Command::Validate { file } => return validate(&file),
        Command::Explain {
            config,
            method,
            url,
            headers,
        } => explain(&config, &method, &url, &headers),
        Command::Certs { dir } => certs(&dir),
        Command::Keys { command } => keys(command),
        Command::Demo { workers } => demo(workers),
        Command::GrpcHello { to, name } => grpc_hello(to, &name),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("portico: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr (stdout carries the access log); `RUST_LOG` filters them with
/// `target=level` directives, default `info`.
fn init_logging() {
    use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a person at a terminal, never into log files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers.filter(|w| *w > 0) {
        // One worker: a single-threaded scheduler does the same job without work-stealing
        // queues and cross-thread wake-ups (the access log and blocking work keep their own
        // threads).
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(path: PathBuf, workers: Option<usize>) -> anyhow::Result<()> {
    let config = config::load_file(&path)?;
    let workers = workers.or(config.workers());
    runtime(workers)?.block_on(serve(config, Some(path)))
}

async fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let fds = portico::raise_fd_limit();
    let gateway = Gateway::bind(config, path).await?;
    for (name, addr) in gateway.listeners() {
        tracing::info!(listener = %name, address = %addr, "listening");
    }
    if let Some(admin) = gateway.admin_addr() {
        tracing::info!(address = %admin, "admin listening");
    }
    tracing::debug!(open_files_limit = fds, "ready");
    gateway.run(shutdown_signal()).await;
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    match config::load_file(path) {
        Ok(config) => {
            println!("{}: OK ({})", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn explain(path: &Path, method: &str, url: &str, headers: &[String]) -> anyhow::Result<()> {
    let config = config::load_file(path)?;
    let report = portico::explain::explain(&config, method, url, headers)?;
    print!("{report}");
    Ok(())
}

fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use portico::keys::{digest, new_key, KeyKind};
    match command {
        KeysCommand::New { client_secret } => {
            let kind = if client_secret {
                KeyKind::ClientSecret
            } else {
                KeyKind::ApiKey
            };
            let made = new_key(kind)?;
            println!("key:    {}\ndigest: {}", made.key, made.digest);
            eprintln!("Give the key to the consumer (it is not stored anywhere); put the digest in the config.");
        }
        KeysCommand::Hash { key } => {
            let key = match key {
                Some(key) => key,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("cannot read the key from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!key.is_empty(), "no key given");
            println!("{}", digest(&key));
        }
        KeysCommand::SigningKey { dir, algorithm } => {
            let algorithm = portico::keys::SigningAlgorithm::parse(&algorithm)
                .with_context(|| format!("{algorithm:?}: expected ES256 or EdDSA"))?;
            let path = portico::keys::new_signing_key(&dir, algorithm)?;
            println!("{}", path.display());
        }
    }
    Ok(())
}

fn certs(dir: &Path) -> anyhow::Result<()> {
    let certs = portico::dev_certs::generate(dir)?;
    println!(
        "Wrote a development CA and a server certificate for {}:\n  {}  (trust this: curl --cacert {} …)\n  {}\n  {}  (private key, mode 0600; never commit it)",
        portico::dev_certs::SERVER_NAMES.join(", "),
        certs.ca.display(),
        certs.ca.display(),
        certs.cert.display(),
        certs.key.display()
    );
    Ok(())
}

/// The demo's certificates: `./certs` when `portico certs` made them, else a fresh set in a
/// temporary directory (so the demo serves HTTPS out of the box, and never writes into the
/// working tree by surprise).
fn demo_certs() -> anyhow::Result<portico::dev_certs::DevCerts> {
    if let Some(certs) = portico::dev_certs::DevCerts::existing(Path::new("certs")) {
        return Ok(certs);
    }
    let dir = std::env::temp_dir().join(format!("portico-demo-{}", std::process::id()));
    portico::dev_certs::generate(&dir).context("cannot make the demo's certificates")
}

fn grpc_hello(to: std::net::SocketAddr, name: &str) -> anyhow::Result<()> {
    let rt = runtime(Some(1))?;
    let greeting = rt.block_on(portico::demo::grpc_hello(to, name))?;
    println!("{greeting} (grpc-status 0)");
    Ok(())
}

fn demo(workers: Option<usize>) -> anyhow::Result<()> {
    let rt = runtime(workers)?;
    let certs = demo_certs()?;
    rt.block_on(async {
        let backends = portico::demo::start_backends().await?;
        let config = portico::demo::config(&backends, Some(&certs))?;
        let gateway = Gateway::bind(config, None).await?;
        print!("{}", portico::demo::instructions(&gateway, Some(&certs)));
        gateway.run(shutdown_signal()).await;
        Ok(())
    })
}
