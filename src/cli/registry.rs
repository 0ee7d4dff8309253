//! `layerfs pull`, `push`, `login`, `logout`: argument types and the commands.
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use clap::{ArgAction, Args, Subcommand};

use crate::image::oci::Platform;
use crate::reference::Reference;
use crate::registry::auth::{AuthFiles, Credentials, registry_name};
use crate::registry::client::{Client, ClientOptions};
use crate::registry::pull::{PullOptions, pull};
use crate::registry::push::{PushOptions, push};
use crate::store::{LockMode, Store};
use crate::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Download an image from a registry into the store
    Pull(PullArgs),
    /// Upload an image from the store to a registry
    Push(PushArgs),
    /// Save credentials for a registry (checked against it first)
    Login(LoginArgs),
    /// Remove saved credentials for a registry
    Logout(LogoutArgs),
}

#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Verify TLS certificates; `--tls-verify=false` also allows plain HTTP to any host
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    pub tls_verify: bool,
}

impl TlsArgs {
    fn client(&self) -> ClientOptions {
        ClientOptions {
            tls_verify: self.tls_verify,
            ..ClientOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// [REGISTRY/]REPOSITORY[:TAG|@sha256:DIGEST]
    pub reference: String,
    /// Platform to pull from a multi-platform image: os/arch[/variant]
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print only errors
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image in the store (name or ID)
    pub image: String,
    /// Where to push: [REGISTRY/]REPOSITORY[:TAG] (default: IMAGE's own name)
    pub destination: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print only errors and the digest
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub seekable: crate::cli::lazy::SeekableArg,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry (`localhost:5000`, `ghcr.io`; default Docker Hub)
    pub server: Option<String>,
    /// Username (asked on a terminal when missing)
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (default Docker Hub)
    pub server: Option<String>,
}

pub fn run(root: &Path, cmd: RegistryCommand) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let files = AuthFiles::from_env();
    match cmd {
        RegistryCommand::Pull(a) => pull_cmd(root, &files, &a, &mut out),
        RegistryCommand::Push(a) => push_cmd(root, &files, &a, &mut out),
        RegistryCommand::Login(a) => login(&files, &a, &mut out),
        RegistryCommand::Logout(a) => logout(&files, &a, &mut out),
    }
}

fn progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

fn pull_cmd(root: &Path, files: &AuthFiles, a: &PullArgs, out: &mut dyn Write) -> Result<()> {
    let r = Reference::parse(&a.reference)?;
    let store = Store::open(root, LockMode::Shared)?;
    let opts = PullOptions {
        platform: a.platform.as_deref().map(Platform::parse).transpose()?,
        client: a.tls.client(),
        progress: progress(a.quiet),
        ..PullOptions::default()
    };
    // Progress goes to stderr (or nowhere with -q); stdout gets the digest and, last, the
    // full reference, so that `REF=$(layerfs pull -q x)` works as with docker.
    let mut sink = std::io::sink();
    let mut stderr = std::io::stderr();
    let w: &mut dyn Write = if a.quiet { &mut sink } else { &mut stderr };
    let pulled = pull(&store, &r, files.lookup(&r.registry)?, &opts, w)?;
    if !a.quiet {
        let _ = writeln!(out, "Digest: {}", pulled.digest);
    }
    let _ = writeln!(out, "{r}");
    Ok(())
}

fn push_cmd(root: &Path, files: &AuthFiles, a: &PushArgs, out: &mut dyn Write) -> Result<()> {
    let store = Store::open(root, LockMode::Shared)?;
    let mut img = store.resolve(&a.image)?;
    // The manifest this name was loaded with (when it still names the kept blobs, push sends
    // it unchanged), as `save NAME` writes it.
    if let Some(m) = Reference::parse(&a.image)
        .ok()
        .and_then(|r| img.manifests.get(&r.to_string()).cloned())
    {
        img.manifest = Some(m);
    }
    let dest = match &a.destination {
        Some(d) => Reference::parse(d)?,
        None => {
            let r = Reference::parse(&a.image).ok().filter(|r| {
                store
                    .refs()
                    .ok()
                    .and_then(|refs| refs.get(&r.to_string()).cloned())
                    .is_some_and(|id| id == img.id)
            });
            r.ok_or_else(|| {
                Error::Usage(format!(
                    "{} is not an image name; give a destination: layerfs push {} REGISTRY/REPOSITORY[:TAG]",
                    a.image, a.image
                ))
            })?
        }
    };
    let opts = PushOptions {
        client: a.tls.client(),
        progress: progress(a.quiet),
        compression: a.seekable.compression,
        ..PushOptions::default()
    };
    let mut sink = std::io::sink();
    let w: &mut dyn Write = if a.quiet { &mut sink } else { out };
    let done = push(&store, &img, &dest, files.lookup(&dest.registry)?, &opts, w)?;
    if a.quiet
        && let Some(d) = done.digest
    {
        let _ = writeln!(out, "{d}");
    }
    Ok(())
}

fn login(files: &AuthFiles, a: &LoginArgs, out: &mut dyn Write) -> Result<()> {
    let registry = registry_name(a.server.as_deref())?;
    let username = match &a.username {
        Some(u) => u.clone(),
        None if a.password_stdin => {
            return Err(Error::Usage(
                "--password-stdin needs --username (-u)".into(),
            ));
        }
        None => prompt("Username", true)?,
    };
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .take(64 << 10)
            .read_to_string(&mut s)
            .map_err(|e| Error::io("read", "<stdin>", e))?;
        s.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        prompt("Password", false)?
    };
    let creds = Credentials::new(&username, &password)?;
    let client = Client::connect(&registry, Some(creds.clone()), &a.tls.client())?;
    client.verify_login()?;
    files.store(&registry, &creds)?;
    let _ = writeln!(
        out,
        "Login Succeeded ({registry}, saved in {})",
        files.own.display()
    );
    Ok(())
}

fn logout(files: &AuthFiles, a: &LogoutArgs, out: &mut dyn Write) -> Result<()> {
    let registry = registry_name(a.server.as_deref())?;
    if files.remove(&registry)? {
        let _ = writeln!(out, "Removing login credentials for {registry}");
        return Ok(());
    }
    match files.other_with(&registry)? {
        Some(p) => Err(Error::Usage(format!(
            "not logged in to {registry} by layerfs; the credentials in {} are Docker's and were left alone",
            p.display()
        ))),
        None => {
            let _ = writeln!(out, "Not logged in to {registry}");
            Ok(())
        }
    }
}

/// Asks on the terminal; without echo for passwords.
fn prompt(label: &str, echo: bool) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Usage(format!(
            "{label} needed and standard input is not a terminal: use -u USER --password-stdin"
        )));
    }
    eprint!("{label}: ");
    let fd = stdin.as_fd();
    let saved = if echo {
        None
    } else {
        let t = rustix::termios::tcgetattr(fd).map_err(Error::Sys)?;
        let mut quiet = t.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &quiet)
            .map_err(Error::Sys)?;
        Some(t)
    };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &t);
        eprintln!();
    }
    r.map_err(|e| Error::io("read", "<stdin>", e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
